import { isIPv6 } from "node:net";
import { expect } from "chai";
import { isIpv6Text, parseIpv6Cidr } from "../../shared/cidr.js";

/** A small deterministic PRNG (mulberry32), so a failure names a case that can be run again. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("cidr: isIpv6Text answers as node's net.isIPv6", () => {
  it("hand-picked forms: compressed, full, embedded IPv4, zones, and near misses", () => {
    const cases = [
      "::", "::1", "1::", "fd00:ec2::254", "FD00:EC2::254", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7",
      "::ffff:1.2.3.4", "::1.2.3.4", "1::2:3.4.5.6", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "::1.02.3.4", "::1.2.3.256", "::0.0.0.0", "::1.2.3", "1.2.3.4",
      "fe80::1%eth0", "fe80::1%", "fe80::1%a b", "fe80::1%a%b", "fe80::1%e-t.h:0", "%eth0", "", " ::1", "::1 ", "::1\0", "::1\0x", "1:::2", ":1::2", "1::2::3",
      "12345::", "0000:0000::", "g::", "::g", "::1/128", "ａ::1", "1:2:3:4:5:6:7:8%z", "::ffff:255.255.255.255", "::ffff:1.2.3.4.5",
    ];
    for (const c of cases) expect(isIpv6Text(c), JSON.stringify(c)).to.equal(isIPv6(c));
  });

  it("20 000 generated texts: valid addresses, mutated ones and random strings", () => {
    const rnd = prng(20261207);
    const pick = (s: string): string => s[Math.floor(rnd() * s.length)] as string;
    const hex = (): string => Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => pick("0123456789abcdefABCDEF")).join("");
    const v4 = (): string => Array.from({ length: 3 + Math.floor(rnd() * 3) }, () => String(Math.floor(rnd() * 300)).padStart(rnd() < 0.1 ? 3 : 1, "0")).join(".");
    const structured = (): string => {
      const n = Math.floor(rnd() * 10);
      const groups = Array.from({ length: n }, hex);
      if (rnd() < 0.5 && n > 0) groups.splice(Math.floor(rnd() * (n + 1)), 0, "");
      if (rnd() < 0.2) groups.push(v4());
      let t = groups.join(":");
      if (rnd() < 0.3) t = (rnd() < 0.5 ? "::" : ":") + t;
      if (rnd() < 0.1) t += "::";
      if (rnd() < 0.15) t += "%" + Array.from({ length: Math.floor(rnd() * 4) }, () => pick("ab0-.:%_ Z")).join("");
      return t;
    };
    const random = (): string => Array.from({ length: Math.floor(rnd() * 40) }, () => pick("0123456789abcdefABCDEF::::..%gz- ")).join("");
    let valid = 0;
    for (let i = 0; i < 20_000; i++) {
      const c = i % 3 === 0 ? random() : structured();
      const want = isIPv6(c);
      if (want) valid++;
      if (isIpv6Text(c) !== want) expect.fail(`case ${i}: ${JSON.stringify(c)}: net.isIPv6 says ${want}`);
    }
    // The generator must reach both answers often enough to compare anything.
    expect(valid).to.be.greaterThan(700);
  });

  it("parseIpv6Cidr keeps its answers", () => {
    expect(parseIpv6Cidr("fd00:ec2::254/128")).to.deep.equal({ address: "fd00:ec2::254", prefix: 128 });
    expect(parseIpv6Cidr("FD00:EC3::/64")).to.deep.equal({ address: "fd00:ec3::", prefix: 64 });
    expect(parseIpv6Cidr("::1")).to.deep.equal({ address: "::1", prefix: 128 });
    expect(parseIpv6Cidr("10.0.0.0/8")).to.equal(undefined);
    expect(parseIpv6Cidr("::1/129")).to.equal(undefined);
    expect(parseIpv6Cidr("::1\0/64")).to.equal(undefined);
  });
});
