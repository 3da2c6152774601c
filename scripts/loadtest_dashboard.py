"""Added latency of the gateway with the dashboard's overview open in headless Chromium (polling
/ui/api/overview every 5 s) vs closed: one gateway process, alternating closed/open rounds,
against `orchestrator loadtest`'s instant upstream; prints the medians and their ratio.

    PYTHONPATH=. .venv/bin/python scripts/loadtest_dashboard.py     # needs wrk and Debian's chromium
"""
import asyncio, json, statistics, sys, tempfile
from pathlib import Path
from playwright.async_api import async_playwright
from orchestrator.loadtest.driver import drive
from orchestrator.loadtest.processes import free_port, served
from orchestrator.loadtest.run import _body, gateway_config
from orchestrator.loadtest.upstream import MODEL

LEVELS, SECONDS, ROUNDS = [1, 16], 8, 3
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="dash-load"))
    up, gwp = free_port(), free_port()
    res = {c: {"closed": [], "open": []} for c in LEVELS}
    async with served([sys.executable, "-m", "orchestrator.loadtest.upstream", "--port", str(up)], health=f"http://127.0.0.1:{up}/health",
                      name="upstream", log=work / "up.log"):
        cfg = gateway_config(work, up)
        async with served([sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(cfg), "--port", str(gwp), "--log-level", "warning"],
                          health=f"http://127.0.0.1:{gwp}/health", name="gateway", log=work / "gw.log"):
            gw = f"http://127.0.0.1:{gwp}"
            await drive(f"{gw}/v1/chat/completions", _body("single"), concurrency=16, seconds=2)  # warm-up
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                for r in range(ROUNDS):
                    for state in ("closed", "open"):
                        page = None
                        if state == "open":
                            page = await browser.new_page()
                            await page.goto(f"{gw}/ui")
                            await page.wait_for_function("() => Number(document.querySelector('[data-poll]').dataset.updates || 0) >= 1")
                        for c in LEVELS:
                            d = await drive(f"http://127.0.0.1:{up}/v1/chat/completions", _body(MODEL), concurrency=c, seconds=SECONDS)
                            o = await drive(f"{gw}/v1/chat/completions", _body("single"), concurrency=c, seconds=SECONDS)
                            res[c][state].append({"p50": o.p50_ms - d.p50_ms, "p95": o.p95_ms - d.p95_ms, "rps": o.rps, "errors": o.errors})
                        if page is not None:
                            polls = await page.evaluate("document.querySelector('[data-poll]').dataset.updates")
                            res.setdefault("polls", []).append(int(polls))
                            await page.close()
                        print(r, state, json.dumps({c: res[c][state][-1] for c in LEVELS}), flush=True)
                await browser.close()
    for c in LEVELS:
        for pct in ("p50", "p95"):
            cl = statistics.median(x[pct] for x in res[c]["closed"])
            op = statistics.median(x[pct] for x in res[c]["open"])
            print(f"concurrency {c} added {pct}: closed {cl:.3f} ms, open {op:.3f} ms, ratio open/closed {op / cl:.3f}")
        print(f"concurrency {c} rps: closed {statistics.median(x['rps'] for x in res[c]['closed']):.0f}, open {statistics.median(x['rps'] for x in res[c]['open']):.0f}")
    print("overview polls while open:", res.get("polls"))

asyncio.run(main())
