/**
 * Which CAs the egress proxy trusts for upstream TLS (tenant-daemon/proxy/egress-forward.ts):
 * node's bundled roots, plus the certificates of the file named by PADDOCK_EXTRA_CA_CERTS (the
 * supervisor's `NODE_EXTRA_CA_CERTS`, passed on under that name so that node does not parse it at
 * every daemon start: shared/daemon-env.ts), plus an operator's explicit PEMs (tests).
 *
 * The file is read on the first upstream TLS request, never at start, and one secure context is
 * built from it then and used for every upstream connection after (a context of node's ~140 roots
 * costs tens of ms of CPU to build; `ca` on an agent would build it again per connection). As with
 * `NODE_EXTRA_CA_CERTS` (https://nodejs.org/docs/latest-v20.x/api/cli.html#node_extra_ca_certsfile),
 * a file that cannot be read or holds no certificate is a warning (logged once) and the bundled
 * roots are used without it. Without a file and explicit PEMs, node's default context is used:
 * a daemon started by hand with `NODE_EXTRA_CA_CERTS` set trusts it as it always did.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import tls from "node:tls";
import type { Logger } from "../../shared/logger.js";

/** Options of {@link UpstreamCas}. */
export interface UpstreamCasOptions {
  /** Path of a PEM file of extra CAs (PADDOCK_EXTRA_CA_CERTS); undefined or "" = none. */
  caFile: string | undefined;
  /** Extra CA certificates (PEM text), trusted besides the file's. */
  extraPems: readonly string[];
  log: Logger;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * The certificates (PEM blocks) of `text` that parse as X.509, and how many blocks did not.
 * Pure; never throws.
 */
export function pemCertificates(text: string): { pems: string[]; bad: number } {
  const pems: string[] = [];
  let bad = 0;
  for (const m of text.matchAll(PEM_CERT)) {
    try {
      new X509Certificate(m[0]);
      pems.push(m[0] + "\n");
    } catch {
      bad++;
    }
  }
  return { pems, bad };
}

/** The upstream trust of one egress proxy, settled on first use. */
export class UpstreamCas {
  private context: { value: tls.SecureContext | undefined } | undefined;

  constructor(private readonly opts: UpstreamCasOptions) {}

  /**
   * The secure context for upstream connections: undefined = node's default (no extra CAs).
   * Built on the first call (the file read synchronously then, once), the same object after.
   * Never throws: an unreadable or empty file is logged (warn, once) and left out.
   */
  secureContext(): tls.SecureContext | undefined {
    this.context ??= { value: this.build() };
    return this.context.value;
  }

  private build(): tls.SecureContext | undefined {
    const fromFile = this.readFile();
    if (fromFile.length === 0 && this.opts.extraPems.length === 0) return undefined;
    return tls.createSecureContext({ ca: [...tls.rootCertificates, ...fromFile, ...this.opts.extraPems] });
  }

  private readFile(): string[] {
    const file = this.opts.caFile;
    if (file === undefined || file === "") return [];
    let text: string;
    try {
      text = readFileSync(file, "latin1");
    } catch (err) {
      this.opts.log.warn("egress: ignoring extra upstream CA certificates, the file cannot be read", { file, err: (err as NodeJS.ErrnoException).code ?? String(err) });
      return [];
    }
    const { pems, bad } = pemCertificates(text);
    if (pems.length === 0) this.opts.log.warn("egress: ignoring extra upstream CA certificates, the file holds no certificate", { file, unparsable: bad });
    else if (bad > 0) this.opts.log.warn("egress: some extra upstream CA certificates do not parse and are ignored", { file, loaded: pems.length, unparsable: bad });
    return pems;
  }
}
