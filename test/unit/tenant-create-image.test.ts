/**
 * A tenant create checks the image its daemon will use before anything is made
 * (supervisor/tenant-provisioning.ts): the create's `image`, else the template's `config.image`,
 * else the daemon's default. A missing or corrupt one is refused with ERR_IMAGE_NOT_FOUND /
 * ERR_IMAGE_CORRUPT and leaves no tenant record, no state or run dir, no uid claim. No daemon
 * starts: the supervisor's daemon entry does not exist, so a create that got that far fails
 * with another code.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { expect } from "chai";
import { parse } from "yaml";
import { isPaddockError, type ErrorCode } from "../../shared/errors.js";
import { createLogger } from "../../shared/logger.js";
import { listUidClaims } from "../../shared/uid-ranges.js";
import { parseSupervisorConfig } from "../../supervisor/supervisor-config.js";
import { TenantRegistry } from "../../supervisor/tenant-registry.js";
import { TenantService } from "../../supervisor/tenant-service.js";
import { AuditLog } from "../../supervisor/audit-log.js";
import { tenantImage } from "../../supervisor/tenant-provisioning.js";

const TEMPLATES_DIR = path.resolve(import.meta.dirname, "../../../templates");

describe("tenant create: the image is checked whatever names it", () => {
  let dir = "";
  let savedEnv: string | undefined;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-crimg-"));
    savedEnv = process.env.PADDOCK_UID_CLAIMS_DIR;
    process.env.PADDOCK_UID_CLAIMS_DIR = path.join(dir, "claims");
  });
  afterEach(async () => {
    if (savedEnv === undefined) delete process.env.PADDOCK_UID_CLAIMS_DIR;
    else process.env.PADDOCK_UID_CLAIMS_DIR = savedEnv;
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Templates: `sandbox` with `config.image` set to `image` (deleted when undefined). */
  async function service(image: string | undefined): Promise<{ svc: TenantService; registry: TenantRegistry; stateDir: string; runDir: string; imageDir: string }> {
    const stateDir = path.join(dir, "state");
    const runDir = path.join(dir, "run");
    const imageDir = path.join(dir, "images");
    const templatesDir = path.join(dir, "templates");
    await fs.mkdir(templatesDir);
    const tree = parse(await fs.readFile(path.join(TEMPLATES_DIR, "sandbox.yaml"), "utf8")) as { config: Record<string, unknown> };
    if (image === undefined) delete tree.config.image;
    else tree.config.image = image;
    await fs.writeFile(path.join(templatesDir, "sandbox.yaml"), JSON.stringify(tree));
    const config = parseSupervisorConfig(
      { state_dir: stateDir, run_dir: runDir, image_dir: imageDir, templates: { dir: templatesDir }, daemon_entry: path.join(dir, "no-such-daemon.js") },
      "t",
      { env: {} },
    );
    const registry = new TenantRegistry(path.join(stateDir, "supervisor", "registry.json"));
    await registry.init();
    const quiet = new Writable({ write: (_c, _e, cb) => cb() });
    const svc = new TenantService({ config, registry, audit: new AuditLog(path.join(dir, "audit.log")), log: createLogger({ stream: quiet }) });
    return { svc, registry, stateDir, runDir, imageDir };
  }

  const exists = (p: string): Promise<boolean> => fs.access(p).then(() => true, () => false);

  async function refused(s: Awaited<ReturnType<typeof service>>, body: Record<string, unknown>, code: ErrorCode, names: string): Promise<Error> {
    const err = await s.svc.create({ id: "ti", ...body }, { actor: "test" }).then(() => undefined, (e: unknown) => e);
    expect(isPaddockError(err, code), String(err)).to.equal(true);
    expect((err as Error).message).to.include(JSON.stringify(names)).and.include("paddock image build");
    expect(s.registry.find("ti")).to.equal(undefined);
    expect(await exists(path.join(s.stateDir, "tenants", "ti")), "state dir").to.equal(false);
    expect(await exists(path.join(s.runDir, "tenants", "ti")), "run dir").to.equal(false);
    expect(await listUidClaims()).to.deep.equal([]);
    return err as Error;
  }

  it("the template's image, absent from the store: ERR_IMAGE_NOT_FOUND naming it and how to build it; nothing kept", async () => {
    const s = await service("nope-1");
    const err = await refused(s, {}, "ERR_IMAGE_NOT_FOUND", "nope-1");
    expect(err.message).to.include(`paddock image build nope-1 --image-dir ${s.imageDir}`);
  });

  it("the template's image with a corrupt image.json: ERR_IMAGE_CORRUPT naming the file; nothing kept", async () => {
    const s = await service("broken");
    await fs.mkdir(path.join(s.imageDir, "broken", "rootfs"), { recursive: true });
    await fs.writeFile(path.join(s.imageDir, "broken", "image.json"), "{not json");
    const err = await refused(s, {}, "ERR_IMAGE_CORRUPT", "broken");
    expect(err.message).to.include(path.join(s.imageDir, "broken", "image.json")).and.include("--force");
  });

  it("a template naming no image: the daemon's default (debian-12) is the one checked", async () => {
    const s = await service(undefined);
    await refused(s, {}, "ERR_IMAGE_NOT_FOUND", "debian-12");
  });

  it("an image named at create replaces the template's in the check", async () => {
    const s = await service("debian-12");
    await fs.mkdir(path.join(s.imageDir, "debian-12", "rootfs"), { recursive: true });
    await fs.writeFile(path.join(s.imageDir, "debian-12", "image.json"), "{}");
    await refused(s, { image: "other" }, "ERR_IMAGE_NOT_FOUND", "other");
  });

  it("tenantImage: the create's, else the template's, else debian-12; a non-string one is left to the render", () => {
    const t = (image: unknown): { tree: Record<string, unknown> } => ({ tree: { config: image === undefined ? {} : { image } } });
    expect(tenantImage(t("a"), "b")).to.equal("b");
    expect(tenantImage(t("a"), undefined)).to.equal("a");
    expect(tenantImage(t(undefined), undefined)).to.equal("debian-12");
    expect(tenantImage(t(7), undefined)).to.equal(undefined);
  });
});
