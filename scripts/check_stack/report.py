"""Counts the checks and prints one line each (`ok ...` / `FAIL ...`)."""


class Report:
    def __init__(self, quiet=False):
        self.quiet = quiet
        self.total = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        self.total += 1
        if ok:
            if not self.quiet:
                print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f": {detail}" if detail else ""))
        return ok
