#!/usr/bin/env python3
"""Writes the scale benchmark's data into DIR: scale.zone (1,000,000 A records under
bench.test) and scale.gslb.toml (100,000 names over 1,000 pools of two members, sharing 100
HTTP checks, probed at 127.0.0.1:PORT). Usage: scale_data.py DIR PORT"""
import sys

w, port = sys.argv[1], sys.argv[2]
with open(f"{w}/scale.zone", "w") as f:
    f.write("$TTL 300\n")
    f.write("@ IN SOA ns1.bench.test. hostmaster.bench.test. 1 7200 900 1209600 300\n")
    f.write("@ IN NS ns1\nns1 IN A 192.0.2.53\n")
    for i in range(1_000_000):
        f.write(f"h{i} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n")
with open(f"{w}/scale.gslb.toml", "w") as f:
    for i in range(100_000):
        f.write(f'[[name]]\nname = "n{i}"\npool = "p{i % 1000}"\n')
    for p in range(1000):
        f.write(
            f'[pool.p{p}]\ncheck = "c{p % 100}"\nmembers = [\n'
            f'  {{ site = "a", address = "192.0.2.{p % 250 + 1}", probe = "127.0.0.1:{port}" }},\n'
            f'  {{ site = "b", address = "198.51.100.{p % 250 + 1}", probe = "127.0.0.1:{port}" }},\n]\n'
        )
    for c in range(100):
        f.write(f'[check.c{c}]\nkind = "http"\npath = "/c{c}"\nexpect_status = "200-499"\ninterval = "5s"\n')
