#!/usr/bin/env python3
"""TA-Lib's per-candle time for the six series `coinpilot bench indicators` computes in
its batch form: RSI(close,14), RSI(close,7), SMA(close,200), BBANDS(close,20,2,2,SMA),
SMA(volume,20) and volume / vol_sma20, on the same candle file. Best and median of
--runs repetitions, as our bench reports them. Needs `pip install ta-lib numpy`."""
import argparse, csv, json, statistics, time

import numpy as np
import talib

p = argparse.ArgumentParser()
p.add_argument("--candles", default="../shared/data/upbit_KRW-BTC_1m_2025-09-01_2025-10-04.csv")
p.add_argument("--runs", type=int, default=20)
p.add_argument("--json", action="store_true")
a = p.parse_args()

with open(a.candles) as f:
    rows = list(csv.DictReader(f))
close = np.array([float(r["close"]) for r in rows])
volume = np.array([float(r["volume"]) for r in rows])
n = len(close)

def six():
    vs = talib.SMA(volume, 20)
    return (talib.RSI(close, 14), talib.RSI(close, 7), talib.SMA(close, 200),
            talib.BBANDS(close, 20, 2.0, 2.0, 0), vs, volume / vs)

def measure(f):
    times = []
    for _ in range(a.runs):
        t = time.perf_counter_ns()
        f()
        times.append(time.perf_counter_ns() - t)
    return min(times) / n, statistics.median(times) / n

figures = [
    ("talib six series", six),
    ("  talib RSI(14)", lambda: talib.RSI(close, 14)),
    ("  talib SMA(200)", lambda: talib.SMA(close, 200)),
    ("  talib BBANDS(20,2)", lambda: talib.BBANDS(close, 20, 2.0, 2.0, 0)),
    ("  talib SMA(volume,20)", lambda: talib.SMA(volume, 20)),
]
for what, f in figures:
    best, med = measure(f)
    if a.json:
        print(json.dumps({"bench": what.strip(), "candles": n, "talib": talib.__version__,
                          "best_ns_per_candle": round(best, 1),
                          "median_ns_per_candle": round(med, 1)}))
    else:
        print(f"{what:<24} {n} candles: best {best:.1f} ns/candle, median {med:.1f} ns/candle (TA-Lib {talib.__version__})")
