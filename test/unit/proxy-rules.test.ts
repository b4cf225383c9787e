/**
 * Allow-rule semantics of the egress proxy (tenant-daemon/proxy/proxy-rules.ts), pure: host
 * patterns (exact, *.suffix, *, IP literals only by themselves), ports, methods, paths
 * (exact, *, prefix/*; ambiguous paths match no path rule) and the create/revoke tuple checks.
 */
import { expect } from "chai";
import { hostMatch, matchablePath, parseRuleTuple, requestMatch, sameTuple } from "../../tenant-daemon/proxy/proxy-rules.js";

describe("egress proxy allow rules (unit)", () => {
  it("host patterns: exact beats *.suffix beats *; a suffix never covers itself; * never covers an IP", () => {
    expect(hostMatch("api.example.com", "api.example.com")).to.equal(3);
    expect(hostMatch("*.example.com", "a.b.example.com")).to.equal(2);
    expect(hostMatch("*.example.com", "example.com")).to.equal(0);
    expect(hostMatch("*.example.com", "badexample.com")).to.equal(0);
    expect(hostMatch("*", "anything.test")).to.equal(1);
    expect(hostMatch("*", "198.18.0.1")).to.equal(0);
    expect(hostMatch("198.18.0.1", "198.18.0.1")).to.equal(3);
  });

  it("paths: exact, * and prefix/* (strictly under); dot segments and encoded separators match no path rule", () => {
    const rule = parseRuleTuple({ host: "a.test", paths: ["/v1/*", "/health"], methods: ["get", "post"] });
    expect(rule.methods).to.deep.equal(["GET", "POST"]);
    expect(requestMatch(rule, "get", matchablePath("/v1/models?x=1"))).to.equal(true);
    expect(requestMatch(rule, "GET", matchablePath("/v1"))).to.equal(false);
    expect(requestMatch(rule, "GET", matchablePath("/v1/"))).to.equal(false);
    expect(requestMatch(rule, "GET", matchablePath("/health"))).to.equal(true);
    expect(requestMatch(rule, "DELETE", matchablePath("/health"))).to.equal(false);
    for (const p of ["/v1/../admin", "/v1/%2e%2e/admin", "/v1%2fadmin", "/v1/x\\..\\y", "/v1/./x"]) expect(requestMatch(rule, "GET", matchablePath(p)), p).to.equal(false);
    expect(requestMatch(parseRuleTuple({ host: "a.test" }), "GET", matchablePath("/v1/../x")), "no path rule: any path").to.equal(true);
  });

  it("tuples: normalised for comparison; passthrough excludes secret, methods and paths; bad fields are refused", () => {
    expect(sameTuple(parseRuleTuple({ host: "A.Test.", ports: [443, 80], methods: ["get"] }), parseRuleTuple({ host: "a.test", ports: [80, 443], methods: ["GET"] }))).to.equal(true);
    expect(sameTuple(parseRuleTuple({ host: "a.test" }), parseRuleTuple({ host: "a.test", passthrough: true }))).to.equal(false);
    expect(parseRuleTuple({ host: "::FFFF:198.18.0.1" }).host).to.equal("198.18.0.1");
    for (const bad of [{ host: "a.test", passthrough: true, secret: "s" }, { host: "a.test", passthrough: true, paths: ["/x"] }, { host: "" }, { host: "a b" }, { host: "a.test", ports: [0] }, { host: "a.test", paths: ["x*"] }, { host: "a.test", methods: ["G E T"] }, { host: "*.*.test" }]) {
      expect(() => parseRuleTuple(bad), JSON.stringify(bad)).to.throw(/./);
    }
  });
});
