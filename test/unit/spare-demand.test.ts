/**
 * tenant-daemon/storage/spare-demand.ts: how many spare disks the pool keeps after bursts of
 * creates (base without demand, the largest burst for a while after one, capped).
 */
import { expect } from "chai";
import { SpareDemand, largestBurst } from "../../tenant-daemon/storage/spare-demand.js";

describe("spare-disk demand", () => {
  it("largestBurst counts the most takes within one window", () => {
    expect(largestBurst([], 10)).to.equal(0);
    expect(largestBurst([5], 10)).to.equal(1);
    expect(largestBurst([30, 0, 9, 10, 25], 10)).to.equal(3); // 0, 9 and 10 (ends inclusive)
    expect(largestBurst([0, 100, 200], 10)).to.equal(1);
  });

  it("keeps the base without demand and after takes one at a time", () => {
    const d = new SpareDemand({ base: 2 });
    expect(d.target(0)).to.equal(2);
    // One create a second (the default window is 2 s, ends inclusive: at most 3 in one).
    for (let t = 0; t < 10; t++) d.record(t * 1_000);
    expect(d.target(10_000)).to.equal(3);
    const slow = new SpareDemand({ base: 2 });
    for (let t = 0; t < 10; t++) slow.record(t * 2_500);
    expect(slow.target(25_000)).to.equal(2);
  });

  it("raises the target to a burst's size, capped at max, and falls back after memoryMs", () => {
    const d = new SpareDemand({ base: 2, max: 16, windowMs: 10_000, memoryMs: 60_000 });
    for (let i = 0; i < 12; i++) d.record(1_000 + i);
    expect(d.target(2_000)).to.equal(12);
    for (let i = 0; i < 12; i++) d.record(5_000 + i);
    expect(d.target(6_000)).to.equal(16);
    expect(d.target(60_999)).to.equal(16);
    expect(d.target(65_100)).to.equal(2);
  });

  it("delays a refill while disks are being taken and spares are left", () => {
    const d = new SpareDemand({ base: 2, quietMs: 1_000 });
    expect(d.refillDelayMs(0, 2)).to.equal(0);
    d.record(5_000);
    expect(d.refillDelayMs(5_200, 3)).to.equal(800);
    expect(d.refillDelayMs(5_200, 0)).to.equal(0);
    expect(d.refillDelayMs(6_000, 3)).to.equal(0);
  });

  it("stays at 0 when the pool is disabled, and refuses bad limits", () => {
    const d = new SpareDemand({ base: 0 });
    for (let i = 0; i < 5; i++) d.record(i);
    expect(d.target(10)).to.equal(0);
    expect(() => new SpareDemand({ base: -1 })).to.throw(RangeError);
    expect(() => new SpareDemand({ base: 2, max: 1.5 })).to.throw(RangeError);
    expect(() => new SpareDemand({ base: 2, windowMs: 0 })).to.throw(RangeError);
  });
});
