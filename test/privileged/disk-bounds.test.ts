/**
 * Disk bounds of one tenant, hit for real in runc VMs behind a real daemon, each next to a
 * positive control:
 * - a console log flood from inside a VM stays under `paddock.console_log_bytes` (the logcap
 *   reader of tenant-daemon/runtime/native/paddock-nsutil.c), the logs endpoint still answers
 *   with the newest lines, and the reader outlives a daemon stop but not its VM;
 * - a VM disk the disks file system cannot back is refused with 507 ERR_STORAGE_OVERCOMMIT
 *   (tenant-daemon/storage/disk-ledger.ts) on a small loop-mounted state fs;
 * - secrets past `paddock.max_secrets` / `paddock.max_secret_bytes` are refused.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { DAEMON_MAIN, TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { fileSize, logcapReaders } from "../helpers/log-files.js";
import { until } from "../helpers/wait.js";

const CAP = 256 * 1024;

const sizeOf = (file: string): Promise<number> => fileSize(file, 0);

describe("disk bounds of a tenant (privileged)", function () {
  this.timeout(240_000);

  describe("console log flood", () => {
    let d: TestDaemon | undefined;
    after(async () => {
      await d?.destroy();
    });

    it("keeps the console log under paddock.console_log_bytes while a VM floods it; logs shows the newest lines; the reader survives a daemon stop and exits with the VM", async () => {
      d = await TestDaemon.create({
        hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: randomIsolatedRange() } }],
        paddock: { console_log_bytes: CAP },
      });
      await d.start();
      // Userdata output goes to the console: 4 s of `yes`, then a marker. (Guest root cannot open
      // /proc/1/fd/1: the pipe belongs to host root, unmapped in the VM's user namespace.)
      const userdata = "#!/bin/sh\ntimeout 4 yes flood-0123456789-abcdefghij\necho MARKER-AFTER-FLOOD\n";
      const r = await d.post("/hostgroup/sbox/nodes?wait=userdata&timeout=120s", { userdata, persistent: true });
      expect(r.status, r.text).to.equal(201);
      const h = (r.json as { hostname: string }).hostname;
      const log = path.join(d.stateDir, "logs", `${h}.log`);
      await until("the marker in the console log", async () => (await fs.readFile(log, "utf8").catch(() => "")).includes("MARKER-AFTER-FLOOD") || undefined, 20_000);
      const [main, rotated] = [await sizeOf(log), await sizeOf(`${log}.1`)];
      console.log(`      console log after a 4 s flood: ${main} + ${rotated} bytes (cap ${CAP})`);
      // Positive control: the flood wrote enough to rotate (the rotated part is a full half).
      expect(rotated, "rotated part").to.equal(CAP / 2);
      expect(main + rotated).to.be.at.most(CAP);
      const logs = await d.get(`/vm/${h}/logs?lines=1`);
      expect(logs.status, logs.text).to.equal(200);
      expect((logs.json as { content: string }).content).to.equal("MARKER-AFTER-FLOOD\n");
      const all = await d.get(`/vm/${h}/logs?lines=0`);
      expect(Buffer.byteLength((all.json as { content: string }).content)).to.equal(main + rotated);

      // The reader is not the daemon's: it keeps running across a daemon stop (persistent VMs
      // keep their console), and it exits once the VM's last process is gone.
      const readers = await logcapReaders(log);
      expect(readers, "one logcap reader").to.have.length(1);
      await d.stop();
      expect(await logcapReaders(log), "reader after daemon stop").to.deep.equal(readers);
      await d.start();
      expect((await d.del(`/hostgroup/sbox/nodes/${h}`)).status).to.equal(200);
      await until("the logcap reader to exit", async () => (await logcapReaders(log)).length === 0 || undefined, 10_000);
    });
  });

  describe("disk over-commit on a small state file system", () => {
    let d: TestDaemon | undefined;
    let mounted = false;
    after(async () => {
      if (!d) return;
      await d.stop().catch(() => undefined);
      if (mounted) {
        await run(process.execPath, [DAEMON_MAIN, "purge", d.configPath], { allowFailure: true, timeoutMs: 120_000 });
        await run("umount", [d.stateDir], { allowFailure: true });
      }
      await d.destroy();
    });

    it("refuses a VM disk the file system cannot back with 507 ERR_STORAGE_OVERCOMMIT; one that fits is created; a delete frees the promise", async () => {
      d = await TestDaemon.create({
        hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: randomIsolatedRange() } }],
      });
      const img = path.join(d.dir, "statefs.img");
      await run("truncate", ["-s", "200M", img]);
      await run("mkfs.ext4", ["-q", "-F", "-m", "0", img]);
      await fs.mkdir(d.stateDir, { recursive: true });
      await run("mount", ["-o", "loop", img, d.stateDir]);
      mounted = true;
      await d.start();
      // Positive control: 128M of a ~190M file system fits.
      const first = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=90s", {});
      expect(first.status, first.text).to.equal(201);
      const h = (first.json as { hostname: string }).hostname;
      // A second 128M disk would promise more than the free space.
      const second = await d.post("/hostgroup/sbox/nodes", {});
      console.log(`      second 128M disk on a 200M fs → ${second.status} ${second.text.slice(0, 240)}`);
      expect(second.status, second.text).to.equal(507);
      expect((second.json as { code: string }).code).to.equal("ERR_STORAGE_OVERCOMMIT");
      const list = (await d.get("/hostgroup/sbox/nodes")).json as { hostname: string }[];
      expect(list.map((n) => n.hostname)).to.deep.equal([h]);
      // Deleting the first VM releases its promise: the same create fits again.
      expect((await d.del(`/hostgroup/sbox/nodes/${h}`)).status).to.equal(200);
      const third = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=90s", {});
      expect(third.status, third.text).to.equal(201);
    });
  });

  describe("secrets caps", () => {
    let d: TestDaemon | undefined;
    after(async () => {
      await d?.destroy();
    });

    it("refuses secrets past paddock.max_secrets (409) and paddock.max_secret_bytes (413), accepts them under", async () => {
      d = await TestDaemon.create({ paddock: { max_secrets: 3, max_secret_bytes: 1000 } });
      await d.start();
      const secret = (name: string, bytes: number) => d!.post("/secrets", { name, data: Buffer.alloc(bytes, 0x61).toString("base64") });
      expect((await secret("a", 400)).status).to.equal(201);
      expect((await secret("b", 400)).status).to.equal(201);
      const tooBig = await secret("c", 201);
      expect(tooBig.status, tooBig.text).to.equal(413);
      expect((tooBig.json as { code: string }).code).to.equal("ERR_SECRETS_TOO_LARGE");
      expect((await secret("c", 200)).status, "exactly at the byte cap").to.equal(201);
      const tooMany = await secret("d", 0);
      expect(tooMany.status, tooMany.text).to.equal(409);
      expect((tooMany.json as { code: string }).code).to.equal("ERR_SECRETS_TOO_MANY");
      // An update may not grow past the byte cap; shrinking one makes room.
      const grow = await d.patch("/secrets/a", { data: Buffer.alloc(401, 0x62).toString("base64") });
      expect(grow.status, grow.text).to.equal(413);
      expect((await d.patch("/secrets/a", { data: Buffer.alloc(100, 0x62).toString("base64") })).status).to.equal(200);
      expect((await d.del("/secrets/c")).status).to.be.oneOf([200, 204]);
      expect((await secret("d", 300)).status).to.equal(201);
      const names = ((await d.get("/secrets")).json as { name: string }[]).map((s) => s.name);
      expect(names).to.deep.equal(["a", "b", "d"]);
    });
  });
});
