/**
 * Preview URLs, the pure parts: address parsing of both forms (supervisor/preview/preview-address.ts),
 * token signing and verification (preview-token.ts), query and cookie stripping
 * (preview-gateway.ts), the daemon's target parsing (tenant-daemon/api/preview-routes.ts) and the
 * `preview:` config section.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { parsePreviewHost, parsePreviewPath } from "../../supervisor/preview/preview-address.js";
import { signPreviewToken, verifyPreviewToken } from "../../supervisor/preview/preview-token.js";
import { takeCookies, takeQueryParam } from "../../supervisor/preview/preview-gateway.js";
import { parsePreviewTarget } from "../../tenant-daemon/api/preview-routes.js";
import { parseSupervisorConfig } from "../../supervisor/supervisor-config.js";

describe("preview URLs (pure)", () => {
  it("parses the host-name form under the base domain only, and checks every label", () => {
    expect(parsePreviewHost("8080-sbox-1.acme.p.example:8080", "/a?b=1", "p.example")).to.deep.include({ form: "host", tenantId: "acme", hostname: "sbox-1", port: 8080, rest: "/a", query: "b=1", prefix: "" });
    expect(parsePreviewHost("8080-SBOX-1.acme.p.example.", "/", "p.example")?.hostname).to.equal("sbox-1");
    expect(parsePreviewHost("api.example", "/", "p.example")).to.equal(undefined);
    expect(parsePreviewHost("8080-sbox-1.acme.p.example", "/", undefined), "host-name form off").to.equal(undefined);
    for (const bad of ["0-sbox-1.acme.p.example", "65536-sbox-1.acme.p.example", "080-sbox-1.acme.p.example", "8080-.acme.p.example", "8080-sbox-1-.acme.p.example", "8080-sbox-1.1acme.p.example", "8080-sbox-1.x.acme.p.example", "sbox.acme.p.example"]) {
      expect(() => parsePreviewHost(bad, "/", "p.example"), bad).to.throw().with.property("code", "ERR_PREVIEW_ADDRESS_INVALID");
    }
  });

  it("parses the path form: prefix, rest byte for byte, query; bad labels are refused", () => {
    expect(parsePreviewPath("/preview/acme/sbox-1/8080/deep//x?q=%2F")).to.deep.include({ form: "path", tenantId: "acme", hostname: "sbox-1", port: 8080, prefix: "/preview/acme/sbox-1/8080", rest: "/deep//x", query: "q=%2F" });
    expect(parsePreviewPath("/preview/acme/sbox-1/8080")?.rest).to.equal("");
    expect(parsePreviewPath("/vm/sbox-1")).to.equal(undefined);
    for (const bad of ["/preview/acme/sbox-1", "/preview/ACME/sbox-1/80/", "/preview/acme/../80/", "/preview/acme/sbox-1/99999/", "/preview/acme/sbox%2F1/80/"]) {
      expect(() => parsePreviewPath(bad), bad).to.throw().with.property("code", "ERR_PREVIEW_ADDRESS_INVALID");
    }
    expect(parsePreviewTarget("/vm/sbox-1/preview/8080/a//b?c")).to.deep.equal({ hostname: "sbox-1", port: 8080, appPath: "/a//b?c" });
    expect(parsePreviewTarget("/vm/sbox-1/preview/8080/")).to.deep.equal({ hostname: "sbox-1", port: 8080, appPath: "/" });
    expect(() => parsePreviewTarget("/vm/sbox-1/preview/0/")).to.throw().with.property("code", "ERR_PREVIEW_ADDRESS_INVALID");
  });

  it("a token verifies for its tenant, VM and port only, until it expires, under its tenant's key only", () => {
    const key = randomBytes(32);
    const other = randomBytes(32);
    const now = Date.now();
    const grant = { tenantId: "acme", hostname: "sbox-1", port: 8080, vmCreatedAt: "2026-01-01T00:00:00.000Z", expiresAtS: Math.floor(now / 1000) + 60 };
    const token = signPreviewToken(key, grant);
    const want = { tenantId: "acme", hostname: "sbox-1", port: 8080 };
    const keys = (k: Buffer | undefined) => () => k;
    expect(verifyPreviewToken(token, want, keys(key), now)).to.deep.equal(grant);
    expect(verifyPreviewToken(token, { ...want, port: 8081 }, keys(key), now)).to.equal(undefined);
    // Every other spelling of the MAC's last character is refused (base64url decoding ignores
    // its spare bits, so a byte comparison would accept some of them).
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (const c of alphabet) {
      if (c === token.slice(-1)) continue;
      expect(verifyPreviewToken(token.slice(0, -1) + c, want, keys(key), now), `last character ${c}`).to.equal(undefined);
    }
    expect(verifyPreviewToken(token, { ...want, hostname: "sbox-2" }, keys(key), now)).to.equal(undefined);
    expect(verifyPreviewToken(token, { ...want, tenantId: "other" }, keys(key), now)).to.equal(undefined);
    expect(verifyPreviewToken(token, want, keys(other), now), "another tenant's key").to.equal(undefined);
    expect(verifyPreviewToken(token, want, keys(undefined), now), "no key").to.equal(undefined);
    expect(verifyPreviewToken(token, want, keys(key), now + 61_000), "expired").to.equal(undefined);
    // A payload edited to another port keeps its old MAC: refused.
    const [head, mac] = token.split(".") as [string, string];
    const edited = Buffer.from(JSON.stringify({ v: 1, t: "acme", h: "sbox-1", p: 8081, c: grant.vmCreatedAt, e: grant.expiresAtS })).toString("base64url");
    expect(head.startsWith("pvt_")).to.equal(true);
    expect(verifyPreviewToken(`pvt_${edited}.${mac}`, { ...want, port: 8081 }, keys(key), now)).to.equal(undefined);
    expect(verifyPreviewToken("pdk_abc", want, keys(key), now)).to.equal(undefined);
  });

  it("strips the token from the query and the preview cookie from Cookie, keeping the rest as sent", () => {
    expect(takeQueryParam("a=1&paddock_token=pvt_x&b=%2F&paddock_token=y", "paddock_token")).to.deep.equal({ values: ["pvt_x", "y"], rest: "a=1&b=%2F" });
    expect(takeQueryParam("a=%zz&b", "paddock_token")).to.deep.equal({ values: [], rest: "a=%zz&b" });
    const names = new Set(["paddock_preview", "__Host-paddock_preview"]);
    expect(takeCookies("a=1; paddock_preview=pvt_1;__Host-paddock_preview=pvt_2; b=2", names)).to.deep.equal({ values: ["pvt_1", "pvt_2"], rest: "a=1; b=2" });
    expect(takeCookies(undefined, names)).to.deep.equal({ values: [], rest: "" });
  });

  it("reads the preview: config section (base domain, scheme, ttls) and refuses bad values with their path", () => {
    const c = parseSupervisorConfig({ preview: { base_domain: "p.example.com", scheme: "https", default_ttl: "30m", max_ttl: "2h" } }, "t", { env: {} });
    expect(c.preview).to.deep.equal({ baseDomain: "p.example.com", scheme: "https", defaultTtlMs: 1_800_000, maxTtlMs: 7_200_000 });
    expect(parseSupervisorConfig(undefined, "t", { env: {} }).preview).to.deep.equal({ baseDomain: undefined, scheme: "http", defaultTtlMs: 3_600_000, maxTtlMs: 86_400_000 });
    for (const [bad, where] of [[{ base_domain: "Example.COM" }, "preview.base_domain"], [{ base_domain: "localhost" }, "preview.base_domain"], [{ scheme: "ftp" }, "preview.scheme"], [{ default_ttl: "3h", max_ttl: "1h" }, "preview.default_ttl"], [{ max_ttl: "soon" }, "preview.max_ttl"]] as const) {
      expect(() => parseSupervisorConfig({ preview: bad }, "t", { env: {} }), JSON.stringify(bad)).to.throw(where);
    }
    expect(parseSupervisorConfig({ preview: { typo: 1 } }, "t", { env: {} }).warnings).to.deep.equal(["preview.typo: unknown key (ignored)"]);
  });
});
