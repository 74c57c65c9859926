"""Question/context pairs shared by the parity tests and ``make bench``: short and long (many-window) contexts,
accented, CJK and emoji text. Random-weight models answer arbitrarily, so only parity with the reference counts."""

CARD_CONTEXT = "42 is the answer to life the universe and everything."
CARD_QUESTION = "What is the answer to life the universe and everything?"

LONG_CONTEXT = " ".join(
    f"Section {i}: the river Élan flows past café №{i} near 東京 and Zoë's 🚀 launch pad, "
    f"which was founded in {1800 + i} by the engineer Ana-María Núñez."
    for i in range(60)
)

CASES = {
    "card": (CARD_QUESTION, CARD_CONTEXT),
    "squad": (
        "Which NFL team represented the AFC at Super Bowl 50?",
        "Super Bowl 50 was an American football game to determine the champion of the National Football "
        "League (NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos "
        "defeated the National Football Conference (NFC) champion Carolina Panthers 24–10 to earn their "
        "third Super Bowl title.",
    ),
    "accented": (
        "Où se trouve le café?",
        "Le café se trouve près de la rivière Élan, à côté de l'école Saint-Étienne.",
    ),
    "cjk": ("東京はどこですか?", "東京は日本の首都です。人口は約千四百万人で、多くの企業の本社があります。"),
    "emoji": ("What launched? 🚀", "On Tuesday 🚀 the rocket 🌕 launched from pad 39A with 👩‍🚀 crew aboard."),
    "whitespace": ("What year?", "It  happened\tin\n1999 — really!!   Nobody\u00a0expected it."),
    "long": ("Who founded the launch pad?", LONG_CONTEXT),
}
