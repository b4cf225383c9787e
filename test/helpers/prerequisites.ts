/**
 * Skips that say why. `npm test` runs mocha with `--forbid-pending` (package.json), so on the
 * machine it is meant for (root, after `bash scripts/setup.sh`: runc, the debian-12 and
 * debian-12-dev images, dist/) nothing may skip and a missing prerequisite fails the run,
 * naming itself. The per-kind scripts (`npm run test:unit`, `test:integration`,
 * `test:privileged`) do not forbid pending tests, for a development box without root.
 */
import { existsSync } from "node:fs";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "../../..");
/** The image store tests use: `PADDOCK_IMAGE_DIR`, else the default of build-main and the daemon. */
export const TEST_IMAGE_DIR = process.env.PADDOCK_IMAGE_DIR ?? "/var/lib/paddock/images";

/**
 * What is missing for a privileged test: root, the named images, built files of dist/.
 * Empty when everything is there.
 */
export function missingPrerequisites(opts: { images?: readonly string[]; dist?: readonly string[] } = {}): string[] {
  const out: string[] = [];
  if (process.getuid?.() !== 0) out.push("needs root");
  for (const image of opts.images ?? ["debian-12"]) {
    if (!existsSync(path.join(TEST_IMAGE_DIR, image, "image.json"))) out.push(`image ${image} absent from ${TEST_IMAGE_DIR}`);
  }
  for (const f of opts.dist ?? ["dist/cli/paddock.js", "dist/tenant-daemon/main.js"]) {
    if (!existsSync(path.join(ROOT, f))) out.push(`${f} absent (npm run build)`);
  }
  return out;
}

/**
 * `describe`, or, when `missing` is not empty, `describe.skip` with the reasons in the title (so
 * the pending tests are listed under them) and on stderr.
 */
export function describeWhenReady(missing: readonly string[], title: string, fn: (this: Mocha.Suite) => void): Mocha.Suite | void {
  if (missing.length === 0) return describe(title, fn);
  const reason = `${missing.join("; ")}: run bash scripts/setup.sh as root`;
  process.stderr.write(`pending: "${title}": ${reason}\n`);
  return describe.skip(`${title} [pending: ${reason}]`, fn);
}

/** In a `before` hook or a test: skip (pending) unless root, saying so. */
export function skipUnlessRoot(ctx: Mocha.Context): void {
  if (process.getuid?.() === 0) return;
  process.stderr.write(`      (pending: "${ctx.test?.parent?.fullTitle() ?? ctx.test?.title ?? "?"}" needs root)\n`);
  ctx.skip();
}
