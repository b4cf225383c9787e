/**
 * The earliest-deadline scheduler VmExpiry and VmIdle share (tenant-daemon/vm/deadline-timer.ts):
 * what it hands to `due`, when it arms its one timer, and that a stop ends it.
 */
import { expect } from "chai";
import { DeadlineTimer } from "../../tenant-daemon/vm/deadline-timer.js";

interface Item {
  name: string;
  at: number | undefined;
  busy?: boolean;
}

describe("DeadlineTimer (tenant-daemon/vm/deadline-timer.ts)", () => {
  const timers: DeadlineTimer<Item>[] = [];
  afterEach(() => {
    for (const t of timers.splice(0)) t.stop();
  });

  function lab(items: Item[], onDue?: (item: Item, timer: DeadlineTimer<Item>) => void) {
    const due: string[] = [];
    let now = 1_000;
    const timer: DeadlineTimer<Item> = new DeadlineTimer<Item>({
      items: () => items,
      deadline: (i) => (i.busy ? undefined : i.at),
      due: (i, d) => {
        expect(d).to.equal(i.at);
        due.push(i.name);
        i.busy = true;
        onDue?.(i, timer);
      },
      now: () => now,
    });
    timers.push(timer);
    return { timer, due, setNow: (ms: number) => { now = ms; } };
  }

  it("hands every overdue item to due, skips items without a deadline, and arms for the earliest ahead", () => {
    const { timer, due, setNow } = lab([
      { name: "past", at: 500 },
      { name: "now", at: 1_000 },
      { name: "none", at: undefined },
      { name: "later", at: 5_000 },
      { name: "soon", at: 2_000 },
    ]);
    timer.kick();
    expect(due).to.deep.equal(["past", "now"]);
    expect(timer.armed).to.equal(true);
    // A busy item is not handed over twice; the clock moving past "soon" hands only it over.
    setNow(2_500);
    timer.kick();
    expect(due).to.deep.equal(["past", "now", "soon"]);
    setNow(10_000);
    timer.kick();
    expect(due).to.deep.equal(["past", "now", "soon", "later"]);
    expect(timer.armed, "nothing ahead: no timer").to.equal(false);
  });

  it("the timer itself kicks at the earliest deadline", async () => {
    const items: Item[] = [{ name: "a", at: Date.now() + 20 }];
    let fired: () => void = () => undefined;
    const firedP = new Promise<void>((r) => { fired = r; });
    const timer = new DeadlineTimer<Item>({ items: () => items, deadline: (i) => (i.busy ? undefined : i.at), due: (i) => { i.busy = true; fired(); } });
    timers.push(timer);
    timer.kick();
    expect(timer.armed).to.equal(true);
    await firedP;
    expect(items[0]?.busy).to.equal(true);
    expect(timer.armed).to.equal(false);
  });

  it("a kick from inside due rescans after the scan instead of nesting, and a stop ends it all", () => {
    let insideA = false;
    let bInsideA: boolean | undefined;
    const { timer, due } = lab([{ name: "a", at: 500 }, { name: "b", at: 600 }, { name: "c", at: 9_000 }], (i, t) => {
      if (i.name === "a") {
        // The work finished at once: the item is free again with a later deadline.
        i.busy = false;
        i.at = 8_000;
        insideA = true;
        t.kick();
        insideA = false;
      }
      if (i.name === "b") bInsideA = insideA;
    });
    timer.kick();
    expect(due).to.deep.equal(["a", "b"]);
    expect(bInsideA, "b is handed over by the outer scan, not by a scan nested in a's due").to.equal(false);
    expect(timer.armed).to.equal(true);
    timer.stop();
    expect(timer.armed).to.equal(false);
    timer.kick();
    expect(timer.armed, "no kick after stop").to.equal(false);
  });
});
