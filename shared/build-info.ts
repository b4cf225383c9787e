/**
 * Which build of Paddock a process runs: `dist/build-info.json`, written last by `npm run build`
 * (scripts/build-info.ts) as `{"version": "<package.json version>", "build": "<12 hex>"}`, where
 * `build` is the start of a SHA-256 over the JavaScript the supervisor, the tenant daemons and
 * the guest agent run (every `.js`/`.cjs` file under dist/shared, dist/supervisor,
 * dist/tenant-daemon and dist/toolbox, with its path). The same sources build the same id.
 * The supervisor reads it once at its start (its own version) and once per daemon spawn (the
 * version recorded for that daemon, supervisor/daemon-process.ts); an adopted daemon keeps the
 * one recorded at its spawn, so `daemon.version` ≠ `supervisor.version` in the admin API names a
 * daemon still running code of another build (docs/admin-api.openapi.yaml).
 */
import { readFileSync } from "node:fs";
import path from "node:path";

/** The file's name, directly under dist/. */
export const BUILD_INFO_FILE = "build-info.json";

/** The dist/ directories whose code {@link BuildInfo.build} covers (scripts/build-info.ts). */
export const BUILD_ID_DIRS = ["shared", "supervisor", "tenant-daemon", "toolbox"] as const;

/** What dist/build-info.json holds. */
export interface BuildInfo {
  /** package.json `version`, e.g. `0.1.0`. */
  version: string;
  /** 12 lowercase hex digits (SHA-256 prefix) identifying the built code. */
  build: string;
}

/**
 * The text of a build-info.json as a {@link BuildInfo} (pure).
 * @returns undefined when it is not JSON of that shape.
 */
export function parseBuildInfo(text: string): BuildInfo | undefined {
  try {
    const v = JSON.parse(text) as { version?: unknown; build?: unknown };
    if (typeof v.version !== "string" || !/^[0-9A-Za-z.+-]{1,64}$/.test(v.version)) return undefined;
    if (typeof v.build !== "string" || !/^[0-9a-f]{12}$/.test(v.build)) return undefined;
    return { version: v.version, build: v.build };
  } catch {
    return undefined;
  }
}

/**
 * The version string of a build (pure): `<version>+<build>` (semver build metadata,
 * https://semver.org/#spec-item-10), e.g. `0.1.0+3f2a9c1d0b7e`.
 */
export function buildVersion(info: BuildInfo): string {
  return `${info.version}+${info.build}`;
}

/**
 * The {@link buildVersion} of the build in `distDir` (one small synchronous read).
 * @returns undefined when `<distDir>/build-info.json` is missing or malformed (a build from
 *   before the file, or one that stopped half-way).
 */
export function readBuildVersion(distDir: string): string | undefined {
  try {
    const info = parseBuildInfo(readFileSync(path.join(distDir, BUILD_INFO_FILE), "utf8"));
    return info === undefined ? undefined : buildVersion(info);
  } catch {
    return undefined;
  }
}
