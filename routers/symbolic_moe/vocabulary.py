"""A built-in skill vocabulary for the embedding tagger (our own list, not the paper's).

The paper tags questions with a keyword LLM (Qwen2.5-7B). Where no capable keyword LLM runs (CPU,
recorded experts), the embedding tagger maps a question to its nearest skills in this list; the
profiles are then built over the same vocabulary. Skills span MMLU-Pro's 14 categories and GPQA's
domains at roughly the grain of the paper's keywords (a subject or sub-skill, ≤ 20 characters).
"""

SKILLS: tuple[str, ...] = (
    # biology and health
    "genetics", "molecular biology", "cell biology", "evolution", "ecology", "microbiology", "virology", "immunology",
    "physiology", "anatomy", "neuroscience", "biochemistry", "botany", "zoology", "pharmacology", "pathology",
    "clinical medicine", "nutrition", "epidemiology", "public health", "nursing", "medical ethics", "endocrinology",
    "cardiology",
    # chemistry
    "organic chemistry", "inorganic chemistry", "physical chemistry", "analytical chemistry", "stoichiometry",
    "chemical kinetics", "electrochemistry", "acid-base chemistry", "chemical bonding", "spectroscopy",
    "chemical equilibrium", "thermochemistry",
    # physics and engineering
    "classical mechanics", "electromagnetism", "optics", "thermodynamics", "quantum mechanics", "relativity",
    "nuclear physics", "astronomy", "fluid mechanics", "waves and sound", "circuit analysis", "electronics",
    "signal processing", "control systems", "materials science", "structural analysis", "heat transfer",
    "power systems", "machine design", "electrical machines",
    # mathematics and computing
    "algebra", "calculus", "linear algebra", "probability", "statistics", "number theory", "geometry",
    "combinatorics", "diff equations", "abstract algebra", "arithmetic", "trigonometry", "logic",
    "algorithms", "data structures", "programming", "computer systems", "operating systems",
    "computer networks", "databases", "machine learning", "cryptography", "theory of computing",
    # economics and business
    "microeconomics", "macroeconomics", "monetary policy", "international trade", "econometrics",
    "finance", "accounting", "corporate finance", "investments", "marketing", "management",
    "business ethics", "business law", "taxation", "interest calculation", "supply and demand",
    # law
    "constitutional law", "criminal law", "contract law", "tort law", "property law", "evidence law",
    "civil procedure", "international law", "jurisprudence", "administrative law", "family law",
    # humanities and social science
    "world history", "us history", "european history", "ancient history", "political science", "diplomacy",
    "philosophy", "ethics", "logic puzzles", "metaphysics", "epistemology", "religion", "psychology",
    "developmental psych", "social psychology", "behavioral theory", "cognitive psychology", "clinical psychology",
    "sociology", "anthropology", "geography", "linguistics", "literature", "art history", "music",
    "education", "human sexuality", "global facts", "security studies",
)

assert all(len(s) <= 20 for s in SKILLS), "skills follow the paper's 20-character keyword limit"
