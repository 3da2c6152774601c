-- wrk script of `orchestrator loadtest`: POSTs one chat completion per request and prints the
-- results as one JSON line (latency in microseconds) for the driver to parse.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("LOADTEST_BODY")
if os.getenv("LOADTEST_AUTH") then wrk.headers["Authorization"] = "Bearer " .. os.getenv("LOADTEST_AUTH") end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'LOADTEST_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
