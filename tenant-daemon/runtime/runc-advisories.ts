/**
 * Known runc security advisories that Paddock warns about at start. runc is the boundary of
 * every VM on the OCI driver; an affected runc lets a hostile guest (or image) attack the host
 * while a sandbox is created or exec'd into.
 *
 * - CVE-2025-31133, CVE-2025-52565, CVE-2025-52881 (November 2025): container escapes through
 *   /dev/null masking, /dev/console bind mounts and redirected procfs writes. Fixed in runc
 *   1.2.8, 1.3.3 and 1.4.0-rc.3. https://github.com/opencontainers/runc/security/advisories
 *
 * Debian 12's runc (1.1.5+ds1-1+deb12u1, last fixed for CVE-2024-21626) has none of these
 * fixes, and no newer runc is in Debian 12's archive.
 */

/** One advisory: the CVEs and whether a given runc version is affected. */
interface RuncAdvisory {
  cves: string[];
  /** Fixed upstream versions by minor line (`1.2` → 1.2.8); versions of an older line are affected. */
  fixedIn: Record<string, [number, number, number]>;
  /** The first release line that was never affected (its first release contains the fix). */
  firstUnaffectedLine: [number, number];
}

const ADVISORIES: readonly RuncAdvisory[] = [
  { cves: ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"], fixedIn: { "1.2": [1, 2, 8], "1.3": [1, 3, 3] }, firstUnaffectedLine: [1, 4] },
];

/** Parse the first line of `runc --version` (`runc version 1.1.5+ds1`) into [major, minor, patch], or undefined. */
export function parseRuncVersion(text: string): [number, number, number] | undefined {
  const m = /runc version (\d+)\.(\d+)\.(\d+)/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

function less(a: readonly number[], b: readonly number[]): boolean {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) < (b[i] ?? 0);
  }
  return false;
}

/**
 * The CVEs a runc version is affected by (pure). A 1.4.0 release candidate counts as 1.4 (only
 * rc.1 and rc.2 were affected; a final 1.4.0 is not).
 * @returns CVE ids, empty when none is known
 */
export function runcAffectedBy(version: [number, number, number]): string[] {
  const out: string[] = [];
  for (const a of ADVISORIES) {
    const line = `${version[0]}.${version[1]}`;
    const fixed = a.fixedIn[line];
    const affected = fixed !== undefined ? less(version, fixed) : less([version[0], version[1]], a.firstUnaffectedLine);
    if (affected) out.push(...a.cves);
  }
  return out;
}

/**
 * The warning to log for the installed runc, or undefined when it is not known to be affected.
 * `versionText` is the output of `runc --version`.
 */
export function runcWarning(versionText: string): string | undefined {
  const v = parseRuncVersion(versionText);
  if (v === undefined) return undefined;
  const cves = runcAffectedBy(v);
  if (cves.length === 0) return undefined;
  return (
    `runc ${v.join(".")} is affected by ${cves.join(", ")} (container escapes during create and exec; ` +
    "fixed in runc 1.2.8, 1.3.3 and 1.4.0). Install a patched runc on PATH (it is picked up at the next daemon start); or run the tenant on gVisor (`hypervisor: gvisor`, runsc), which does not use runc. " +
    "Paddock's user namespaces, seccomp profile and no_new_privs narrow these attacks but do not replace the fix."
  );
}
