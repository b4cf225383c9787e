/**
 * The base image store: a directory of root filesystems built by debootstrap, one per image
 * name. The tenant daemon resolves VM images in it; the CLI and
 * `tenant-daemon/images/build-main.ts` build and list them.
 *
 * ```
 * <imageDir>/<name>/rootfs/       the root filesystem (overlay lower layer, never written by a VM)
 * <imageDir>/<name>/image.json    {name, created, suite, mirror, packages, sizeBytes}; its presence marks a complete image
 *                                 (its `name` must be <name>, and rootfs/ must be a directory, or the image is broken)
 * <imageDir>/.build-<name>-<rand>/  a build in progress (renamed into place when complete)
 * ```
 *
 * Paddock does not pull OCI images: the config's `image` names a local directory image.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "./errors.js";
import { readdirOrEmpty } from "./read-dir.js";
import { run } from "./exec.js";
import { runDebootstrap } from "./debootstrap-run.js";
import { DEFAULT_STATE_DIR } from "./tenant-config-defaults.js";
import { envValue } from "./env.js";

/** Default Debian mirror; `PADDOCK_DEBIAN_MIRROR` overrides it. */
export const DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian";
/** The default image name (Debian 12 "bookworm" minbase): the tenant config's default `config.image`. */
export { DEFAULT_IMAGE_NAME } from "./tenant-config-defaults.js";
/**
 * Packages every image gets on top of Debian's minbase unless built `minimal`: the everyday
 * tools a user of a Slicer VM expects (`ps`, `free`, `top` from procps; `ip` from iproute2;
 * `ping`; `curl` with the CA bundle; `less`; `vi` from vim-tiny).
 */
export const DEFAULT_IMAGE_PACKAGES: readonly string[] = ["ca-certificates", "curl", "iproute2", "iputils-ping", "less", "procps", "vim-tiny"];
/** Debian suite used for builds. */
export const DEFAULT_SUITE = "bookworm";
/** The guest's default non-root user: an exec without `uid` runs as it (docs/slicer-api.md). */
export const DEFAULT_GUEST_USER = { name: "slicer", uid: 1000, gid: 1000, home: "/home/slicer", shell: "/bin/bash" } as const;

/**
 * The image store directory when nothing more specific names one (a command-line flag, the
 * supervisor's or a tenant's config key `image_dir`): `PADDOCK_IMAGE_DIR`, else
 * `images/` under `PADDOCK_STATE_DIR` (default /var/lib/paddock). An absolute path.
 */
export function defaultImageDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(envValue(env.PADDOCK_IMAGE_DIR) ?? path.join(envValue(env.PADDOCK_STATE_DIR) ?? DEFAULT_STATE_DIR, "images"));
}

/**
 * The command that builds image `name` into the store `imageDir`, for error messages (pure):
 * `paddock image build NAME [--force] [--image-dir DIR]`, with `--image-dir` unless the store is
 * the built-in default (/var/lib/paddock/images), so a copied command never rebuilds an image of
 * another store.
 */
export function imageBuildCommand(imageDir: string, name: string, opts: { force?: boolean } = {}): string {
  const dir = path.resolve(imageDir) === defaultImageDir({}) ? "" : ` --image-dir ${imageDir}`;
  return `paddock image build ${name}${opts.force === true ? " --force" : ""}${dir}`;
}

/** Image names: a plain directory name, so no path tricks and no OCI references. */
export const IMAGE_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/**
 * Debian package names (Debian Policy §5.6.1,
 * https://www.debian.org/doc/debian-policy/ch-controlfields.html#source), checked before they
 * reach debootstrap's argv.
 */
const PACKAGE_NAME_PATTERN = /^[a-z0-9][a-z0-9+.-]+$/;
const DEBOOTSTRAP_TIMEOUT_MS = 30 * 60_000;

/** Contents of `image.json`. */
export interface ImageInfo {
  name: string;
  /** RFC 3339 build time. */
  created: string;
  suite: string;
  mirror: string;
  /** Extra packages installed on top of minbase. */
  packages: string[];
  /** Apparent size of the rootfs, bytes (`du -sb`). */
  sizeBytes: number;
}

/** One image of {@link listImages}: its info plus the rootfs path. */
export interface StoredImage extends ImageInfo {
  rootfsDir: string;
}

/** Input of {@link buildImage}. */
export interface BuildImageOptions {
  imageDir: string;
  name: string;
  /** Extra Debian packages (`--include=`), e.g. `["gcc", "python3"]`. */
  packages?: readonly string[];
  /** Debian mirror URL; default `PADDOCK_DEBIAN_MIRROR` or {@link DEFAULT_DEBIAN_MIRROR}. */
  mirror?: string;
  /** Rebuild even when a complete image exists. */
  force?: boolean;
  /** Rebuild when a complete image exists but was built with another package list (else it is reused, with a note). */
  rebuildIfChanged?: boolean;
  /** Only minbase plus `packages`, without {@link DEFAULT_IMAGE_PACKAGES}. */
  minimal?: boolean;
  /** Receives one human-readable line per build step. */
  onProgress?: (line: string) => void;
}

/** True when `ref` looks like an OCI image reference rather than a local image name. */
export function isOciReference(ref: string): boolean {
  return ref.includes("/") || ref.includes(":") || ref.includes("@");
}

function imagePaths(imageDir: string, name: string): { dir: string; rootfsDir: string; infoPath: string } {
  const dir = path.join(imageDir, name);
  return { dir, rootfsDir: path.join(dir, "rootfs"), infoPath: path.join(dir, "image.json") };
}

/**
 * Read `<image>/image.json`.
 * @returns its info, or undefined when the file does not exist (no complete image).
 * @throws PaddockError ERR_IMAGE_CORRUPT when it exists but cannot be read, is not JSON, is not a
 *   JSON object, or its fields are missing or of the wrong type ({@link imageInfoProblems}); the
 *   message names the file and how to rebuild the image.
 */
async function readInfo(infoPath: string): Promise<ImageInfo | undefined> {
  const name = path.basename(path.dirname(infoPath));
  const store = path.dirname(path.dirname(infoPath));
  const corrupt = (why: string, cause: unknown): PaddockError =>
    new PaddockError("ERR_IMAGE_CORRUPT", `image ${JSON.stringify(name)} is corrupt: ${infoPath} ${why}; rebuild it with \`${imageBuildCommand(store, name, { force: true })}\``, {
      cause,
      details: { image: name, file: infoPath },
    });
  let text: string;
  try {
    text = await fs.readFile(infoPath, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw corrupt(`cannot be read (${(err as Error).message})`, err);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw corrupt(`is not valid JSON (${(err as Error).message})`, err);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw corrupt("does not hold a JSON object", undefined);
  const problems = imageInfoProblems(parsed as Record<string, unknown>);
  if (problems.length > 0) throw corrupt(`has fields of the wrong type or missing (${problems.join("; ")})`, undefined);
  const { name: n, created, suite, mirror, packages, sizeBytes } = parsed as ImageInfo;
  return { name: n, created, suite, mirror, packages, sizeBytes };
}

/**
 * What is wrong with the fields of a parsed `image.json` object (pure): every field of
 * {@link ImageInfo} must be there with its type, as {@link buildImage} writes it (strings;
 * `packages` an array of strings; `sizeBytes` a non-negative integer). The one check of
 * {@link resolveImage} (a tenant create, a daemon's start) and {@link listImages}.
 * @returns one `field: expected …, got …` per problem; empty when the object is an ImageInfo.
 */
export function imageInfoProblems(raw: Record<string, unknown>): string[] {
  const got = (v: unknown): string => (v === undefined ? "nothing" : Array.isArray(v) ? "an array" : v === null ? "null" : `${typeof v} ${JSON.stringify(v).slice(0, 40)}`);
  const out: string[] = [];
  for (const k of ["name", "created", "suite", "mirror"] as const) if (typeof raw[k] !== "string") out.push(`${k}: expected a string, got ${got(raw[k])}`);
  const pkgs = raw.packages;
  if (!Array.isArray(pkgs) || !pkgs.every((p) => typeof p === "string")) out.push(`packages: expected an array of strings, got ${Array.isArray(pkgs) ? "an array holding a non-string" : got(pkgs)}`);
  const size = raw.sizeBytes;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) out.push(`sizeBytes: expected a non-negative integer, got ${got(size)}`);
  return out;
}

/**
 * Read image `name` of the store: its `image.json` checked against the directory beside it.
 * @returns the info plus `rootfsDir`; undefined when there is no `image.json` (no image, or a
 *   half-built one: builds only get an image.json once complete).
 * @throws PaddockError ERR_IMAGE_CORRUPT when `image.json` is corrupt ({@link readInfo}), names
 *   another image than its directory, or sits without a `rootfs/` directory; the message names
 *   what is wrong and the rebuild command.
 */
async function readImage(imageDir: string, name: string): Promise<StoredImage | undefined> {
  const p = imagePaths(imageDir, name);
  const info = await readInfo(p.infoPath);
  if (info === undefined) return undefined;
  const rebuild = `rebuild it with \`${imageBuildCommand(imageDir, name, { force: true })}\``;
  if (info.name !== name) {
    throw new PaddockError(
      "ERR_IMAGE_CORRUPT",
      `image ${JSON.stringify(name)} is corrupt: ${p.infoPath} names image ${JSON.stringify(info.name)}, not ${JSON.stringify(name)} (a copied or renamed image directory?); ` +
        `set its "name" to ${JSON.stringify(name)}, or ${rebuild}`,
      { details: { image: name, file: p.infoPath, problem: "name" } },
    );
  }
  const st = await fs.lstat(p.rootfsDir).catch((err: unknown) => err as Error);
  if (st instanceof Error || !st.isDirectory()) {
    const why = st instanceof Error ? (errnoCode(st) === "ENOENT" ? "does not exist" : `cannot be read (${st.message})`) : "is not a directory";
    throw new PaddockError("ERR_IMAGE_CORRUPT", `image ${JSON.stringify(name)} is corrupt: it has ${p.infoPath} but its root filesystem ${p.rootfsDir} ${why}; ${rebuild}`, {
      details: { image: name, file: p.rootfsDir, problem: "rootfs" },
    });
  }
  return { ...info, rootfsDir: p.rootfsDir };
}

/**
 * Every complete image in the store (a directory with `image.json` and `rootfs/`), sorted by name.
 * A missing store directory is an empty store; a directory without `image.json` (half-built) is
 * skipped; a broken image (corrupt `image.json`, one naming another image, or no `rootfs/`; see
 * {@link readImage}) is left out and handed to `onCorrupt` (ERR_IMAGE_CORRUPT naming what is
 * wrong; {@link resolveImage} throws it).
 */
export async function listImages(imageDir: string, opts: { onCorrupt?: (err: PaddockError) => void } = {}): Promise<StoredImage[]> {
  const entries = await readdirOrEmpty(imageDir);
  const out: StoredImage[] = [];
  for (const entry of entries.sort()) {
    if (!IMAGE_NAME_PATTERN.test(entry)) continue;
    try {
      const image = await readImage(imageDir, entry);
      if (image !== undefined) out.push(image);
    } catch (err) {
      // A broken image: not a complete image.
      if (err instanceof PaddockError) opts.onCorrupt?.(err);
      else throw err;
    }
  }
  return out;
}

/**
 * Resolve the config's `image` to a rootfs directory.
 * @returns absolute path of `<imageDir>/<name>/rootfs`
 * @throws PaddockError ERR_IMAGE_NOT_FOUND (400) when the image is not in the store, with how to
 *   build it; OCI references (`ghcr.io/...`) get an explanation that Paddock does not pull OCI
 *   images, plus the list of local images. ERR_IMAGE_CORRUPT (500) when its `image.json` exists
 *   but cannot be read or parsed or has fields of the wrong type ({@link imageInfoProblems}),
 *   names another image, or has no `rootfs/` directory beside it ({@link readImage}), naming
 *   what is wrong and the rebuild command.
 */
export async function resolveImage(imageDir: string, name: string): Promise<string> {
  const available = async (): Promise<string> => {
    const names = (await listImages(imageDir)).map((i) => i.name);
    return names.length === 0 ? `the image store ${imageDir} is empty` : `local images in ${imageDir}: ${names.join(", ")}`;
  };
  if (isOciReference(name)) {
    throw new PaddockError(
      "ERR_IMAGE_NOT_FOUND",
      `image ${JSON.stringify(name)} is an OCI image reference; Paddock does not pull OCI images, it runs local directory images ` +
        `built with \`paddock image build <name>\` (${await available()}); set config.image to one of them`,
      { details: { image: name } },
    );
  }
  if (!IMAGE_NAME_PATTERN.test(name)) {
    throw new PaddockError("ERR_IMAGE_NOT_FOUND", `image name ${JSON.stringify(name)} is not a valid image name (expected [a-z0-9][a-z0-9._-]*)`, {
      details: { image: name },
    });
  }
  // A broken image is its own error (ERR_IMAGE_CORRUPT), not a missing image.
  const image = await readImage(imageDir, name);
  if (image === undefined) {
    throw new PaddockError(
      "ERR_IMAGE_NOT_FOUND",
      `image ${JSON.stringify(name)} is not in the image store ${imageDir}; build it with \`${imageBuildCommand(imageDir, name)}\` ` +
        `(or scripts/build-image.sh --name ${name}); ${await available()}`,
      { details: { image: name } },
    );
  }
  return image.rootfsDir;
}

/**
 * Build (or reuse) the image `name`: debootstrap `--variant=minbase` bookworm into a temp dir
 * next to the target, add the default non-root user `slicer` (1000:1000, /home/slicer, bash),
 * create `/etc/slicer`, clean apt caches, write `image.json`, then rename the whole directory
 * into place (atomic on one filesystem). An existing complete image is returned unchanged
 * unless `force`; a broken one ({@link readImage}: corrupt `image.json`, no `rootfs/`) is
 * rebuilt, with a progress line saying why.
 *
 * Takes about a minute with a nearby mirror. Needs root (debootstrap, chroot).
 * @throws PaddockError ERR_IMAGE_BUILD_FAILED with what debootstrap said (its stderr, its `E:`/`W:`
 *   lines on stdout and the end of its log: shared/debootstrap-run.ts) or the failing step's stderr;
 *   ERR_BAD_REQUEST for bad names;
 *   ERR_IMAGE_CORRUPT (without `force`) when the directory's `image.json` names another image
 *   (its rootfs may be a good renamed copy: the message says how to fix the name).
 */
export async function buildImage(options: BuildImageOptions): Promise<StoredImage> {
  const { imageDir, name } = options;
  const progress = options.onProgress ?? (() => undefined);
  if (!IMAGE_NAME_PATTERN.test(name)) {
    throw new PaddockError("ERR_BAD_REQUEST", `image name ${JSON.stringify(name)} is invalid (expected [a-z0-9][a-z0-9._-]*, at most 63 characters)`);
  }
  const packages = [...new Set([...(options.minimal ? [] : DEFAULT_IMAGE_PACKAGES), ...(options.packages ?? [])])].filter((p) => p !== "").sort();
  for (const pkg of packages) {
    if (!PACKAGE_NAME_PATTERN.test(pkg)) throw new PaddockError("ERR_BAD_REQUEST", `package name ${JSON.stringify(pkg)} is invalid`);
  }
  const mirror = options.mirror ?? process.env.PADDOCK_DEBIAN_MIRROR ?? DEFAULT_DEBIAN_MIRROR;
  const target = imagePaths(imageDir, name);

  if (!options.force) {
    const existing = await readImage(imageDir, name).catch((err: unknown) => {
      // A directory whose image.json names another image may hold a good rootfs (a renamed
      // copy): the error says how to fix the name, and --force rebuilds over it.
      if (!(err instanceof PaddockError) || err.details?.problem === "name") throw err;
      progress(`${err.message.replace(/; (set its|rebuild it)\b.*$/, "")}; rebuilding it`);
      return undefined;
    });
    const same = existing !== undefined && existing.packages.slice().sort().join(",") === packages.join(",");
    if (existing !== undefined && (same || !options.rebuildIfChanged)) {
      progress(same
        ? `image ${name} already built (${existing.created}); reusing it (use --force to rebuild)`
        : `image ${name} was built with packages [${existing.packages.join(",")}], not [${packages.join(",")}]; reusing it (use --force to rebuild)`);
      return { ...existing, name, rootfsDir: target.rootfsDir };
    }
    if (existing !== undefined) progress(`image ${name} was built with packages [${existing.packages.join(",")}]; rebuilding it with [${packages.join(",")}]`);
  }
  await fs.mkdir(imageDir, { recursive: true, mode: 0o755 });
  // Leftovers of builds of this name that died half-way (the process was killed mid-debootstrap).
  for (const entry of await fs.readdir(imageDir)) {
    if (entry.startsWith(`.build-${name}-`) || entry.startsWith(`.old-${name}-`)) {
      progress(`removing leftover ${entry}`);
      await fs.rm(path.join(imageDir, entry), { recursive: true, force: true });
    }
  }

  const buildDir = path.join(imageDir, `.build-${name}-${randomBytes(4).toString("hex")}`);
  const rootfs = path.join(buildDir, "rootfs");
  await fs.mkdir(buildDir, { mode: 0o755 });
  try {
    // 1. debootstrap minbase (essential + apt), extra packages via --include.
    const args = ["--variant=minbase"];
    if (packages.length > 0) args.push(`--include=${packages.join(",")}`);
    args.push(DEFAULT_SUITE, rootfs, mirror);
    progress(`debootstrap ${args.join(" ")} (about a minute)`);
    const started = Date.now();
    await runDebootstrap(args, rootfs, DEBOOTSTRAP_TIMEOUT_MS);
    progress(`debootstrap done in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    // 2. The default non-root user (the one an exec without uid runs as) and Slicer's config dir.
    const u = DEFAULT_GUEST_USER;
    progress(`creating user ${u.name} (${u.uid}:${u.gid}, ${u.home}, ${u.shell})`);
    await run("chroot", [rootfs, "groupadd", "-g", String(u.gid), u.name], { errorCode: "ERR_IMAGE_BUILD_FAILED" });
    await run("chroot", [rootfs, "useradd", "-m", "-u", String(u.uid), "-g", String(u.gid), "-d", u.home, "-s", u.shell, u.name], {
      errorCode: "ERR_IMAGE_BUILD_FAILED",
    });
    await fs.mkdir(path.join(rootfs, "etc/slicer"), { recursive: true, mode: 0o755 });
    // debootstrap copies the build host's name and resolver; neither belongs in an image
    // (runc sets the hostname, the network layer writes resolv.conf per VM).
    await fs.writeFile(path.join(rootfs, "etc/hostname"), "localhost\n");
    await fs.writeFile(path.join(rootfs, "etc/resolv.conf"), "");

    // 3. Clean apt caches (they only make every VM's lower layer bigger).
    progress("cleaning apt caches");
    await run("chroot", [rootfs, "apt-get", "clean"], { errorCode: "ERR_IMAGE_BUILD_FAILED" });
    await fs.rm(path.join(rootfs, "var/lib/apt/lists"), { recursive: true, force: true });
    await fs.mkdir(path.join(rootfs, "var/lib/apt/lists/partial"), { recursive: true });

    // 4. image.json marks the image complete.
    const du = await run("du", ["-sb", rootfs], { timeoutMs: 120_000, errorCode: "ERR_IMAGE_BUILD_FAILED" });
    const info: ImageInfo = {
      name,
      created: new Date().toISOString(),
      suite: DEFAULT_SUITE,
      mirror,
      packages,
      sizeBytes: Number.parseInt(du.stdout.split(/\s/)[0] ?? "0", 10),
    };
    await fs.writeFile(path.join(buildDir, "image.json"), JSON.stringify(info, null, 2) + "\n", { mode: 0o644 });

    // 5. Swap into place. rename(2) of a directory onto a non-empty one fails, so an old image
    //    (forced rebuild, or a half-built one without image.json) is first moved aside.
    //    Running VMs whose overlay uses the old rootfs keep their mount; removing it under them
    //    is the operator's call when forcing a rebuild.
    const old = path.join(imageDir, `.old-${name}-${randomBytes(4).toString("hex")}`);
    let movedOld = false;
    try {
      await fs.rename(target.dir, old);
      movedOld = true;
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw err;
    }
    await fs.rename(buildDir, target.dir);
    if (movedOld) await fs.rm(old, { recursive: true, force: true });
    progress(`image ${name} ready at ${target.rootfsDir} (${(info.sizeBytes / 1e6).toFixed(0)} MB)`);
    return { ...info, rootfsDir: target.rootfsDir };
  } catch (err) {
    await fs.rm(buildDir, { recursive: true, force: true }).catch(() => undefined);
    if (err instanceof PaddockError) throw err;
    throw new PaddockError("ERR_IMAGE_BUILD_FAILED", `building image ${name} failed: ${(err as Error).message}`, { cause: err });
  }
}
