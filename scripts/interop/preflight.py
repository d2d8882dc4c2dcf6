"""Wait (with a deadline) until both sims have traded a little, so that every client's trades
and open-orders checks compare more than one or two records. Run by scripts/test-clients."""

import sys
import time

import common as C

MIN_TRADES = 3
DEADLINE_S = 40


def main():
    C.SIM = C.Sim()
    end = time.monotonic() + DEADLINE_S
    for market in C.MARKETS:
        while True:
            n = len(C.raw_trades(market, "BTCUSDT"))
            if n >= MIN_TRADES:
                print(f"preflight: {market} sim has {n} BTCUSDT trades, "
                      f"{len(C.raw_open_orders(market))} open orders")
                break
            if time.monotonic() > end:
                print(f"preflight: the {market} sim made only {n} BTCUSDT trades in {DEADLINE_S}s",
                      file=sys.stderr)
                return 1
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
