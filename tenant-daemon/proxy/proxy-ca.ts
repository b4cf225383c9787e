/**
 * The tenant's egress CA: the certificate authority the proxy signs leaf certificates with when
 * it terminates TLS for a rule that injects a secret or filters methods/paths. VMs of proxy-mode
 * groups trust it (egressnet installs {@link ProxyCa.certificatePem} into the VM's store).
 *
 * Keys are RSA 2048 made by Node's crypto; certificates are built and signed with node-forge
 * (https://github.com/digitalbazaar/forge, `pki`). The CA key and certificate live in
 * `<stateDir>/proxy/ca.key` and `ca.crt` (0600, dir 0700), made on first use and kept across
 * restarts so VMs keep trusting it. Leaf certificates share one key made at start, are valid
 * for 7 days and cached per host name (at most {@link LEAF_CACHE_MAX}).
 */
import crypto from "node:crypto";
import { promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import type forge from "node-forge";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { writeFileAtomic } from "../../shared/state-store.js";

/** Most leaf certificates kept in memory. */
export const LEAF_CACHE_MAX = 512;
const LEAF_VALID_MS = 7 * 86_400_000;
/**
 * New (uncached) leaves minted at most this many per second, after a burst of
 * {@link LEAF_MINT_BURST}: each costs ~25 ms of the daemon's event loop (node-forge signs in
 * JavaScript), and a guest chooses the names (SNI to the proxy, CONNECT under a `*.suffix` rule).
 */
export const LEAF_MINT_PER_SECOND = 4;
export const LEAF_MINT_BURST = 16;
const CA_VALID_YEARS = 10;

/** A key and certificate pair in PEM, as `tls.createSecureContext` takes them. */
export interface KeyCertPem {
  key: string;
  cert: string;
}

function newRsaKeyPem(): string {
  return crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

let forgeModule: Promise<typeof forge> | undefined;

/**
 * node-forge, loaded on first use: most daemons never mint a certificate, and loading it costs
 * an idle daemon ~1.6 MiB of heap (docs/benchmarks.md, figure 7).
 */
function loadForge(): Promise<typeof forge> {
  forgeModule ??= import("node-forge").then((m) => m.default);
  return forgeModule;
}

function randomSerial(): string {
  const b = crypto.randomBytes(16);
  b[0] = (b[0] as number) & 0x7f; // positive
  return b.toString("hex");
}

/** The tenant's CA, loaded or made on first use. */
export class ProxyCa {
  private ca: Promise<{ key: forge.pki.rsa.PrivateKey; cert: forge.pki.Certificate; pem: string }> | undefined;
  private leafKey: { pem: string; forge: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey } | undefined;
  private readonly leaves = new Map<string, { pem: KeyCertPem; notAfter: number }>();
  private mintTokens = LEAF_MINT_BURST;
  private mintRefilledAt = Date.now();

  /**
   * @param dir `<stateDir>/proxy`.
   * @param tenantId named in the CA's subject.
   */
  constructor(private readonly dir: string, private readonly tenantId: string) {}

  /** PEM of the CA certificate (made and stored on first call). */
  async certificatePem(): Promise<string> {
    return (await this.load()).pem;
  }

  private load(): Promise<{ key: forge.pki.rsa.PrivateKey; cert: forge.pki.Certificate; pem: string }> {
    this.ca ??= this.loadOrCreate();
    this.ca.catch(() => (this.ca = undefined));
    return this.ca;
  }

  private async loadOrCreate(): Promise<{ key: forge.pki.rsa.PrivateKey; cert: forge.pki.Certificate; pem: string }> {
    const keyFile = path.join(this.dir, "ca.key");
    const certFile = path.join(this.dir, "ca.crt");
    const forge = await loadForge();
    try {
      const [keyPem, certPem] = await Promise.all([fs.readFile(keyFile, "utf8"), fs.readFile(certFile, "utf8")]);
      return { key: forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey, cert: forge.pki.certificateFromPem(certPem), pem: certPem };
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw err;
    }
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const keyPem = newRsaKeyPem();
    const key = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
    cert.serialNumber = randomSerial();
    cert.validity.notBefore = new Date(Date.now() - 3_600_000);
    cert.validity.notAfter = new Date(Date.now() + CA_VALID_YEARS * 365 * 86_400_000);
    const subject = [{ name: "commonName", value: `Paddock egress CA ${this.tenantId}` }, { name: "organizationName", value: "Paddock" }];
    cert.setSubject(subject);
    cert.setIssuer(subject);
    cert.setExtensions([
      { name: "basicConstraints", cA: true, pathLenConstraint: 0, critical: true },
      { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
      { name: "subjectKeyIdentifier" },
    ]);
    cert.sign(key, forge.md.sha256.create());
    const certPem = forge.pki.certificateToPem(cert);
    await writeFileAtomic(keyFile, keyPem, 0o600);
    await writeFileAtomic(certFile, certPem, 0o600);
    return { key, cert, pem: certPem };
  }

  /**
   * A leaf certificate for `host` (a DNS name or an IP literal) signed by the CA, with the
   * shared leaf key. Cached until a day before it ends.
   * @throws PaddockError ERR_EGRESS_BUSY when new leaves are asked for faster than
   *   {@link LEAF_MINT_PER_SECOND} (after a burst of {@link LEAF_MINT_BURST}).
   */
  async leafFor(host: string): Promise<KeyCertPem> {
    const cached = this.leaves.get(host);
    if (cached && cached.notAfter - Date.now() > 86_400_000) return cached.pem;
    const now = Date.now();
    this.mintTokens = Math.min(LEAF_MINT_BURST, this.mintTokens + ((now - this.mintRefilledAt) / 1000) * LEAF_MINT_PER_SECOND);
    this.mintRefilledAt = now;
    if (this.mintTokens < 1) throw new PaddockError("ERR_EGRESS_BUSY", `new proxy leaf certificates are minted at most ${LEAF_MINT_PER_SECOND} per second`);
    this.mintTokens -= 1;
    const ca = await this.load();
    const forge = await loadForge();
    if (!this.leafKey) {
      const pem = newRsaKeyPem();
      const k = forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;
      this.leafKey = { pem, forge: k, publicKey: forge.pki.setRsaPublicKey(k.n, k.e) };
    }
    const cert = forge.pki.createCertificate();
    cert.publicKey = this.leafKey.publicKey;
    cert.serialNumber = randomSerial();
    const notAfter = Date.now() + LEAF_VALID_MS;
    cert.validity.notBefore = new Date(Date.now() - 3_600_000);
    cert.validity.notAfter = new Date(notAfter);
    cert.setSubject([{ name: "commonName", value: host.slice(0, 64) }]);
    cert.setIssuer(ca.cert.subject.attributes);
    cert.setExtensions([
      { name: "basicConstraints", cA: false },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames: [net.isIP(host) !== 0 ? { type: 7, ip: host } : { type: 2, value: host }] },
      { name: "authorityKeyIdentifier", keyIdentifier: ca.cert.generateSubjectKeyIdentifier().getBytes() },
    ]);
    cert.sign(ca.key, forge.md.sha256.create());
    const pem = { key: this.leafKey.pem, cert: forge.pki.certificateToPem(cert) + ca.pem };
    if (this.leaves.size >= LEAF_CACHE_MAX) this.leaves.delete(this.leaves.keys().next().value as string);
    this.leaves.set(host, { pem, notAfter });
    return pem;
  }
}
