/**
 * `paddock image build|list`: the local base image store (shared/image-store.ts).
 * Image dir: `--image-dir`, else PADDOCK_IMAGE_DIR, else `${PADDOCK_STATE_DIR:-/var/lib/paddock}/images`
 * (the tenant config's `paddock.image_dir` default).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { buildImage, DEFAULT_IMAGE_NAME, defaultImageDir, listImages } from "../shared/image-store.js";
import { parseFlags, expectPositionals } from "./args.js";
import { EXIT, UsageError } from "./cli-errors.js";
import { writeOut, type CliContext } from "./cli-context.js";
import { formatAge, formatBytes, renderJson, renderTable, Progress } from "./output.js";

/** Help text of `paddock image`. */
export const IMAGE_HELP = `usage: paddock image COMMAND [flags]

  build [NAME] [--packages gcc,python3] [--minimal] [--force] [--mirror URL] [--image-dir DIR] [--json]
        debootstrap Debian 12 minbase with the everyday tools (procps, iproute2, ping: root
        only, vm exec --uid 0, as no_new_privs voids its file capability; curl,
        ca-certificates, less, vim-tiny; not with --minimal) plus --packages into the image
        store; NAME defaults to debian-12. An image already built is reused (--force rebuilds
        it); a broken one (corrupt image.json, or no rootfs/) is rebuilt; one whose image.json
        names another image (a renamed copy) is refused unless --force
  list [--image-dir DIR] [--json]
        a broken image (image.json unreadable, not JSON, a field missing or of the wrong type,
        or naming another image than its directory; or no rootfs/ directory) is not listed: a
        warning on stderr names it (ERR_IMAGE_CORRUPT; paddock image build NAME --force
        rebuilds it)

Image dir: --image-dir, else PADDOCK_IMAGE_DIR, else \${PADDOCK_STATE_DIR:-/var/lib/paddock}/images.
`;

/** The image store directory for an environment (pure). */
export function imageDirFor(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  return flag !== undefined ? path.resolve(flag) : defaultImageDir(env);
}

async function imageBuild(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    packages: { type: "string" },
    force: { type: "boolean" },
    minimal: { type: "boolean" },
    mirror: { type: "string" },
    "image-dir": { type: "string" },
    json: { type: "boolean" },
  });
  expectPositionals(positionals, 0, 1, "paddock image build [NAME] [--packages a,b] [--minimal] [--force]");
  const imageDir = imageDirFor(values["image-dir"], ctx.env);
  const packages = (values.packages ?? "").split(",").map((p) => p.trim()).filter((p) => p !== "");
  const name = positionals[0] ?? DEFAULT_IMAGE_NAME;
  const started = Date.now();
  // Each step is printed as a line; on a TTY the current step also shows its running time.
  let step: Progress | undefined;
  const onProgress = (line: string): void => {
    step?.done();
    ctx.stderr.write(`[image ${name}] ${line}\n`);
    const s = new Progress(ctx.stderr);
    s.every(500, () => `[image ${name}]   … ${s.elapsed()}`);
    step = s;
  };
  try {
    const image = await buildImage({ imageDir, name, packages, mirror: values.mirror, force: values.force ?? false, minimal: values.minimal ?? false, onProgress });
    step?.done();
    if (values.json) await writeOut(ctx.stdout, renderJson(image));
    else await writeOut(ctx.stdout, `image ${image.name} ready in ${((Date.now() - started) / 1000).toFixed(1)} s: ${image.rootfsDir} (${formatBytes(image.sizeBytes)}${image.packages.length ? `, packages ${image.packages.join(",")}` : ""})\n`);
  } finally {
    step?.done();
  }
  return EXIT.OK;
}

async function imageList(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { "image-dir": { type: "string" }, json: { type: "boolean" } }, { noArguments: true });
  expectPositionals(positionals, 0, 0, "paddock image list [--json]");
  const imageDir = imageDirFor(values["image-dir"], ctx.env);
  // A missing store lists as empty: say so on stderr, or a mistyped --image-dir reads as "no images".
  if (!(await fs.stat(imageDir).then((st) => st.isDirectory(), () => false))) await writeOut(ctx.stderr, `paddock: warning: there is no image store at ${imageDir} (no such directory)\n`);
  // A corrupt image is not listed; say so on stderr (stdout, --json included, stays the list).
  const images = await listImages(imageDir, {
    onCorrupt: (err) => ctx.stderr.write(`paddock: warning: ${err.message} (${err.code})\n`),
  });
  if (values.json) await writeOut(ctx.stdout, renderJson(images));
  else {
    const now = Date.now();
    await writeOut(ctx.stdout, renderTable(["NAME", "SUITE", "SIZE", "AGE", "PACKAGES", "ROOTFS"], images.map((i) => [
      i.name, i.suite, formatBytes(i.sizeBytes), formatAge(i.created, now), i.packages.join(","), i.rootfsDir,
    ])));
  }
  return EXIT.OK;
}

/** Dispatch `paddock image <command> …`. */
export async function imageCommand(ctx: CliContext, argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    await writeOut(ctx.stderr, IMAGE_HELP);
    return EXIT.USAGE;
  }
  if (cmd === "help" || cmd === "--help" || cmd === "-h" || rest.includes("--help") || rest.includes("-h")) {
    await writeOut(ctx.stdout, IMAGE_HELP);
    return EXIT.OK;
  }
  if (cmd === "build") return imageBuild(ctx, rest);
  if (cmd === "list" || cmd === "ls") return imageList(ctx, rest);
  throw new UsageError(`unknown image command ${JSON.stringify(cmd)}; see paddock image --help`);
}
