/**
 * Command-line entry of the image builder (used by scripts/build-image.sh and CI):
 *
 * ```
 * node dist/tenant-daemon/images/build-main.js --name debian-12 [--packages gcc,python3]
 *      [--minimal] [--mirror URL] [--image-dir DIR] [--force | --rebuild-if-changed]
 * ```
 *
 * Packages: shared/image-store.ts DEFAULT_IMAGE_PACKAGES plus `--packages` (only `--packages`
 * with `--minimal`). An image already built is reused; with `--rebuild-if-changed` (what
 * scripts/setup.sh passes) it is rebuilt when its package list differs.
 *
 * Image dir: `--image-dir`, else `PADDOCK_IMAGE_DIR`, else `<PADDOCK_STATE_DIR or /var/lib/paddock>/images`
 * (the same default as the tenant config's `paddock.image_dir`). Progress goes to stderr; the
 * final `image.json` (plus `rootfsDir`) is printed on stdout. Exit 1 with the error on failure.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { buildImage, DEFAULT_IMAGE_NAME, defaultImageDir } from "../../shared/image-store.js";

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      name: { type: "string", default: DEFAULT_IMAGE_NAME },
      packages: { type: "string", default: "" },
      mirror: { type: "string" },
      "image-dir": { type: "string" },
      force: { type: "boolean", default: false },
      "rebuild-if-changed": { type: "boolean", default: false },
      minimal: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write("usage: build-image [--name debian-12] [--packages gcc,python3] [--minimal] [--mirror URL] [--image-dir DIR] [--force | --rebuild-if-changed]\n");
    return;
  }
  const imageDir = path.resolve(values["image-dir"] ?? defaultImageDir(process.env));
  const image = await buildImage({
    imageDir,
    name: values.name,
    packages: values.packages.split(",").map((p) => p.trim()).filter((p) => p !== ""),
    mirror: values.mirror,
    force: values.force,
    rebuildIfChanged: values["rebuild-if-changed"],
    minimal: values.minimal,
    onProgress: (line) => process.stderr.write(`[build-image] ${line}\n`),
  });
  process.stdout.write(JSON.stringify(image, null, 2) + "\n");
}

main().catch((err: unknown) => {
  process.stderr.write(`[build-image] error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
