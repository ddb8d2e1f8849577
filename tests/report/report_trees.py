"""Names of the fake results trees that tests/report/conftest.py builds (imported by the tests and the fixtures)."""
PLANS = "xtlunetPlansXTL"
SEG, CLS = "Dataset601_FakeSeg", "Dataset602_FakeCls"
SEG_FOLDS = {0: ["c0", "c1"], 1: ["c2", "c3"]}
