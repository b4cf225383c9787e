import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { rejection } from "../helpers/rejection.js";
import { DEFAULT_IMAGE_PACKAGES, buildImage, imageBuildCommand, isOciReference, listImages, resolveImage } from "../../shared/image-store.js";
import { debootstrapFailureReason, readDebootstrapLogTail } from "../../shared/debootstrap-run.js";

async function fakeImage(imageDir: string, name: string, complete: boolean, packages: readonly string[] = []): Promise<void> {
  await fs.mkdir(path.join(imageDir, name, "rootfs", "etc"), { recursive: true });
  if (complete) {
    const info = { name, created: "2025-01-01T00:00:00.000Z", suite: "bookworm", mirror: "http://deb.debian.org/debian", packages, sizeBytes: 1 };
    await fs.writeFile(path.join(imageDir, name, "image.json"), JSON.stringify(info));
  }
}

describe("image store", () => {
  let imageDir: string;
  beforeEach(async () => {
    imageDir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-images-"));
  });
  afterEach(async () => {
    await fs.rm(imageDir, { recursive: true, force: true });
  });

  it("resolves a complete image to its rootfs", async () => {
    await fakeImage(imageDir, "debian-12", true);
    expect(await resolveImage(imageDir, "debian-12")).to.equal(path.join(imageDir, "debian-12", "rootfs"));
  });

  it("lists complete images only, ignoring half-built and in-progress ones", async () => {
    await fakeImage(imageDir, "debian-12", true);
    await fakeImage(imageDir, "demo", true);
    await fakeImage(imageDir, "broken", false);
    await fs.mkdir(path.join(imageDir, ".build-x-1234"));
    expect((await listImages(imageDir)).map((i) => i.name)).to.deep.equal(["debian-12", "demo"]);
    expect(await listImages(path.join(imageDir, "missing"))).to.deep.equal([]);
  });

  it("explains how to build a missing image", async () => {
    await fakeImage(imageDir, "debian-12", true);
    const err = await rejection(resolveImage(imageDir, "ubuntu-24"));
    expect(isPaddockError(err, "ERR_IMAGE_NOT_FOUND")).to.equal(true);
    expect((err as Error).message).to.include("paddock image build ubuntu-24").and.include("debian-12");
    expect(isPaddockError(await rejection(resolveImage(imageDir, "broken")), "ERR_IMAGE_NOT_FOUND")).to.equal(true);
  });

  it("reports a corrupt image.json as a corrupt image naming the file, not as a missing image", async () => {
    await fakeImage(imageDir, "debian-12", true);
    const file = path.join(imageDir, "debian-12", "image.json");
    for (const text of ["{\"name\": \"debian-12\", \"crea", "null", "[1]"]) {
      await fs.writeFile(file, text);
      const err = await rejection(resolveImage(imageDir, "debian-12"));
      expect(isPaddockError(err, "ERR_IMAGE_CORRUPT"), `${text}: ${String(err)}`).to.equal(true);
      expect((err as Error).message).to.include(file).and.include("paddock image build debian-12 --force").and.not.include("not in the image store");
    }
    const warned: string[] = [];
    expect(await listImages(imageDir, { onCorrupt: (e) => warned.push(`${e.code} ${e.message}`) })).to.deep.equal([]);
    expect(warned).to.have.length(1);
    expect(warned[0]).to.match(/^ERR_IMAGE_CORRUPT /).and.include(file);
  });

  it("an image.json whose fields are missing or of the wrong type is corrupt, for resolve and list alike", async () => {
    await fakeImage(imageDir, "debian-12", true);
    await fakeImage(imageDir, "other", true);
    const file = path.join(imageDir, "debian-12", "image.json");
    const good = JSON.parse(await fs.readFile(file, "utf8")) as Record<string, unknown>;
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ ...good, suite: 12 }, "suite: expected a string, got number 12"],
      [{ ...good, sizeBytes: "145 MB" }, "sizeBytes: expected a non-negative integer"],
      [{ ...good, sizeBytes: -1 }, "sizeBytes: expected a non-negative integer"],
      [{ ...good, packages: "curl" }, "packages: expected an array of strings"],
      [{ ...good, packages: ["curl", 3] }, "packages: expected an array of strings"],
      [{ ...good, created: undefined }, "created: expected a string, got nothing"],
    ];
    for (const [info, why] of bad) {
      await fs.writeFile(file, JSON.stringify(info));
      const err = await rejection(resolveImage(imageDir, "debian-12"));
      expect(isPaddockError(err, "ERR_IMAGE_CORRUPT"), `${why}: ${String(err)}`).to.equal(true);
      expect((err as Error).message).to.include(file).and.include(why).and.include("paddock image build debian-12 --force");
      const warned: string[] = [];
      expect((await listImages(imageDir, { onCorrupt: (e) => warned.push(`${e.code} ${e.message}`) })).map((i) => i.name), why).to.deep.equal(["other"]);
      expect(warned, why).to.have.length(1);
      expect(warned[0]).to.match(/^ERR_IMAGE_CORRUPT /).and.include(file).and.include(why);
    }
    // Fields it does not know are kept out of the info.
    await fs.writeFile(file, JSON.stringify({ ...good, extra: 1 }));
    expect((await listImages(imageDir))[0]).to.deep.equal({ ...good, rootfsDir: path.join(imageDir, "debian-12", "rootfs") });
  });

  it("an image.json without rootfs/, or naming another image, is a broken image for resolve, list and build", async () => {
    await fakeImage(imageDir, "other", true);
    // image.json but no rootfs/ (a store copied without it).
    await fakeImage(imageDir, "norootfs", true);
    await fs.rm(path.join(imageDir, "norootfs", "rootfs"), { recursive: true });
    // image.json naming another image (a renamed copy).
    await fakeImage(imageDir, "renamed", true);
    const renamedInfo = path.join(imageDir, "renamed", "image.json");
    await fs.writeFile(renamedInfo, (await fs.readFile(renamedInfo, "utf8")).replace('"name":"renamed"', '"name":"debian-12"'));
    const rootfs = path.join(imageDir, "norootfs", "rootfs");
    let err = await rejection(resolveImage(imageDir, "norootfs"));
    expect(isPaddockError(err, "ERR_IMAGE_CORRUPT"), String(err)).to.equal(true);
    expect((err as Error).message).to.include(`${rootfs} does not exist`).and.include("paddock image build norootfs --force").and.not.include("not in the image store");
    err = await rejection(resolveImage(imageDir, "renamed"));
    expect(isPaddockError(err, "ERR_IMAGE_CORRUPT"), String(err)).to.equal(true);
    expect((err as Error).message).to.include(renamedInfo).and.include('names image "debian-12", not "renamed"').and.include("paddock image build renamed --force");
    const warned: string[] = [];
    expect((await listImages(imageDir, { onCorrupt: (e) => warned.push(`${e.code} ${e.message}`) })).map((i) => i.name)).to.deep.equal(["other"]);
    expect(warned).to.have.length(2);
    expect(warned[0]).to.match(/^ERR_IMAGE_CORRUPT /).and.include(rootfs);
    expect(warned[1]).to.match(/^ERR_IMAGE_CORRUPT /).and.include(renamedInfo);
    // build does not "reuse" an image without its rootfs: it rebuilds it (here debootstrap fails
    // at once against a closed loopback port, so nothing is built and the store is untouched).
    const lines: string[] = [];
    err = await rejection(buildImage({ imageDir, name: "norootfs", mirror: "http://127.0.0.1:9/debian", onProgress: (l) => lines.push(l) }));
    expect(isPaddockError(err, "ERR_IMAGE_BUILD_FAILED"), String(err)).to.equal(true);
    expect(lines.join("\n")).to.include(`${rootfs} does not exist; rebuilding it`).and.not.match(/reusing/);
    // ... and refuses to rebuild over a renamed copy (its rootfs may be good) unless forced.
    err = await rejection(buildImage({ imageDir, name: "renamed", onProgress: () => undefined }));
    expect(isPaddockError(err, "ERR_IMAGE_CORRUPT"), String(err)).to.equal(true);
    expect(await fs.stat(path.join(imageDir, "renamed", "rootfs")).then((st) => st.isDirectory())).to.equal(true);
  });

  it("a debootstrap failure says why (its E: line on stdout, the end of its log), not an empty reason, and leaves no build dir", async () => {
    // debootstrap writes nothing to stderr here: its messages go to stdout, wget's to its log.
    const err = await rejection(buildImage({ imageDir, name: "nomirror", minimal: true, mirror: "http://127.0.0.1:9/debian" }));
    expect(isPaddockError(err, "ERR_IMAGE_BUILD_FAILED"), String(err)).to.equal(true);
    const msg = (err as Error).message;
    expect(msg).to.not.match(/: $/);
    expect(msg).to.include("failed (exit 1): E: Failed getting release file http://127.0.0.1:9/debian/dists/bookworm/Release");
    expect(msg).to.match(/the end of its log \S+\/rootfs\/debootstrap\/debootstrap\.log \(removed with the build directory\): .*Connection refused/);
    expect(await fs.readdir(imageDir)).to.deep.equal([]);
  });

  it("debootstrap's failure reason: stderr, then E:/W: lines (else the last stdout lines), then the log; never empty", () => {
    expect(debootstrapFailureReason({ stdout: "", stderr: "" })).to.equal("no output");
    expect(debootstrapFailureReason({ stdout: "I: a\nW: b\nI: c\nE: d\n", stderr: " boom \n" })).to.equal("boom; W: b | E: d");
    expect(debootstrapFailureReason({ stdout: "I: one\nI: two\n", stderr: "", log: { path: "/b/rootfs/debootstrap/debootstrap.log", tail: "x | y" } }))
      .to.equal("I: one | I: two; the end of its log /b/rootfs/debootstrap/debootstrap.log (removed with the build directory): x | y");
  });

  it("reads the end of a debootstrap log only as a plain file, never through a symlink", async () => {
    const target = path.join(imageDir, "t");
    await fs.mkdir(path.join(target, "debootstrap"), { recursive: true });
    await fs.writeFile(path.join(target, "debootstrap", "debootstrap.log"), Array.from({ length: 40 }, (_, i) => `line ${i}`).join("\n") + "\n");
    expect(await readDebootstrapLogTail(target)).to.equal(Array.from({ length: 12 }, (_, i) => `line ${28 + i}`).join(" | "));
    await fs.writeFile(path.join(imageDir, "secret"), "host file\n");
    await fs.rm(path.join(target, "debootstrap", "debootstrap.log"));
    await fs.symlink(path.join(imageDir, "secret"), path.join(target, "debootstrap", "debootstrap.log"));
    expect(await readDebootstrapLogTail(target)).to.equal(undefined);
    const other = path.join(imageDir, "u");
    await fs.mkdir(path.join(imageDir, "elsewhere"));
    await fs.writeFile(path.join(imageDir, "elsewhere", "debootstrap.log"), "host file\n");
    await fs.mkdir(other);
    await fs.symlink(path.join(imageDir, "elsewhere"), path.join(other, "debootstrap"));
    expect(await readDebootstrapLogTail(other)).to.equal(undefined);
    expect(await readDebootstrapLogTail(path.join(imageDir, "missing"))).to.equal(undefined);
  });

  it("names the store in the build command unless it is the default one", async () => {
    expect(imageBuildCommand("/var/lib/paddock/images", "debian-12")).to.equal("paddock image build debian-12");
    expect(imageBuildCommand("/var/lib/paddock/images/", "debian-12", { force: true })).to.equal("paddock image build debian-12 --force");
    expect(imageBuildCommand("/tmp/copy", "debian-12", { force: true })).to.equal("paddock image build debian-12 --force --image-dir /tmp/copy");
    // imageDir here is a temp store: both messages carry it, so the command rebuilds this store's image.
    await fakeImage(imageDir, "debian-12", true);
    expect((await rejection(resolveImage(imageDir, "ubuntu-24")) as Error).message).to.include(`paddock image build ubuntu-24 --image-dir ${imageDir}`);
    await fs.writeFile(path.join(imageDir, "debian-12", "image.json"), "{");
    expect((await rejection(resolveImage(imageDir, "debian-12")) as Error).message).to.include(`paddock image build debian-12 --force --image-dir ${imageDir}`);
  });

  it("explains that OCI references are not pulled and lists local images", async () => {
    await fakeImage(imageDir, "debian-12", true);
    const ref = "ghcr.io/openfaasltd/slicer-systemd:6.1.90-x86_64-latest";
    expect(isOciReference(ref)).to.equal(true);
    const err = await rejection(resolveImage(imageDir, ref));
    expect(isPaddockError(err, "ERR_IMAGE_NOT_FOUND")).to.equal(true);
    expect((err as Error).message).to.match(/does not pull OCI images/).and.include("debian-12");
  });

  it("rejects names that could escape the store", async () => {
    expect(isPaddockError(await rejection(resolveImage(imageDir, "..")), "ERR_IMAGE_NOT_FOUND")).to.equal(true);
    expect(isPaddockError(await rejection(buildImage({ imageDir, name: "../x" })), "ERR_BAD_REQUEST")).to.equal(true);
    expect(isPaddockError(await rejection(buildImage({ imageDir, name: "ok", packages: ["gcc;rm"] })), "ERR_BAD_REQUEST")).to.equal(true);
  });

  it("reuses a complete image without rebuilding it", async () => {
    await fakeImage(imageDir, "debian-12", true);
    const lines: string[] = [];
    const img = await buildImage({ imageDir, name: "debian-12", onProgress: (l) => lines.push(l) });
    expect(img.rootfsDir).to.equal(path.join(imageDir, "debian-12", "rootfs"));
    expect(img.created).to.equal("2025-01-01T00:00:00.000Z");
    expect(lines.join("\n")).to.match(/reusing/);
  });

  it("builds the everyday tools into every image unless minimal, and reuses an image built with the same list", async () => {
    expect(DEFAULT_IMAGE_PACKAGES).to.include.members(["procps", "iproute2", "curl", "ca-certificates", "less"]);
    await fakeImage(imageDir, "tools", true, [...DEFAULT_IMAGE_PACKAGES, "gcc"].sort());
    const lines: string[] = [];
    const img = await buildImage({ imageDir, name: "tools", packages: ["gcc"], rebuildIfChanged: true, onProgress: (l) => lines.push(l) });
    expect(img.created, "reused, not rebuilt").to.equal("2025-01-01T00:00:00.000Z");
    expect(lines.join("\n")).to.match(/already built .*reusing/);
  });

  it("an image built with another package list is reused with a note, unless rebuilding is asked for", async () => {
    await fakeImage(imageDir, "debian-12", true, []);
    const lines: string[] = [];
    const img = await buildImage({ imageDir, name: "debian-12", onProgress: (l) => lines.push(l) });
    expect(img.created).to.equal("2025-01-01T00:00:00.000Z");
    expect(lines.join("\n")).to.match(/was built with packages \[\], not \[ca-certificates,.*\]; reusing it/);
    const minimal: string[] = [];
    await buildImage({ imageDir, name: "debian-12", minimal: true, rebuildIfChanged: true, onProgress: (l) => minimal.push(l) });
    expect(minimal.join("\n"), "minimal matches the minbase-only image").to.match(/already built/);
  });
});
