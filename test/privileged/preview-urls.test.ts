/**
 * Preview URLs through the REAL supervisor gateway (`paddock up` as a child) to a real runc
 * VM in isolated network mode running an HTTP + WebSocket app on 127.0.0.1:8080 (node inside
 * the VM; it echoes the request it got as JSON, streams SSE on /sse and echoes WebSocket
 * messages after a first message holding the upgrade's headers).
 *
 * Covers: the host-name form (Host header to 127.0.0.1, no DNS) and the path form reach the
 * app with the prefix stripped; a minted token opens its port and not another port, VM or
 * tenant; an expired token, a forged one and none get 401; the tenant token and the preview
 * token never reach the app (it echoes its headers and query); the query token is exchanged
 * for a host-only cookie by a 303; the path form drops cookies and adds the CSP sandbox; SSE
 * streams; a token bound to an earlier VM of the same name is refused by the daemon;
 * WebSocket echo through the preview URL.
 */
import { createHmac } from "node:crypto";
import { promises as fs } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import WebSocket from "ws";
import { openWs } from "../helpers/ws.js";
import { PROJECT_ROOT } from "../helpers/daemon.js";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { request } from "../helpers/http.js";
import { leaksOf, rid } from "../reliability/helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

const BASE = "preview.test";

/** The app inside the VM: HTTP echo, SSE, and a minimal WebSocket echo (RFC 6455 framing, no deps). */
const APP = `
const http=require('http'),crypto=require('crypto');
const frame=(op,p)=>Buffer.concat([p.length<126?Buffer.from([0x80|op,p.length]):Buffer.from([0x80|op,126,p.length>>8,p.length&255]),p]);
const s=http.createServer((q,r)=>{
 if(q.url.startsWith('/sse')){r.writeHead(200,{'content-type':'text/event-stream'});let i=0;const t=setInterval(()=>{r.write('data: '+(i++)+'\\n\\n');if(i===3){clearInterval(t);r.end();}},20);return;}
 let n=0;q.on('data',(c)=>{n+=c.length;});q.on('end',()=>{r.setHeader('set-cookie','app=1; Path=/');r.setHeader('content-type','application/json');r.end(JSON.stringify({method:q.method,url:q.url,headers:q.headers,bytes:n}));});
});
s.on('upgrade',(q,so)=>{
 const k=crypto.createHash('sha1').update(q.headers['sec-websocket-key']+'258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
 so.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: '+k+'\\r\\n\\r\\n');
 so.write(frame(1,Buffer.from(JSON.stringify({url:q.url,headers:q.headers}))));
 let b=Buffer.alloc(0);
 so.on('data',(d)=>{b=Buffer.concat([b,d]);for(;;){if(b.length<2)return;let l=b[1]&127,o=2;if(l===126){if(b.length<4)return;l=b.readUInt16BE(2);o=4;}else if(l===127){so.destroy();return;}
  if(b.length<o+4+l)return;const m=b.subarray(o,o+4),p=Buffer.from(b.subarray(o+4,o+4+l));for(let i=0;i<l;i++)p[i]^=m[i&3];const op=b[0]&15;b=b.subarray(o+4+l);
  if(op===8){so.end(Buffer.from([0x88,0]));return;}so.write(frame(op,p));}});
 so.on('error',()=>{});
});
s.listen(8080,'127.0.0.1',()=>console.log('listening'));
`;

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string>;
  bytes: number;
}

describeWhenReady(missingPrerequisites(), "preview URLs through the supervisor gateway (privileged)", function () {
  this.timeout(180_000);
  const a = rid("pva");
  const b = rid("pvb");
  let sup: TestSupervisor;
  let templates = "";
  let tokenA = "";
  let tokenB = "";
  let h = "";
  let createdAt = "";
  let preview = "";

  /** One request to the gateway with raw headers (Host for the host-name form). */
  const send = (method: string, p: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> => {
    const { host, port } = sup.gatewayTarget();
    return new Promise((resolve, reject) => {
      const req = http.request({ host, port, method, path: p, headers: { ...(body !== undefined ? { "content-length": String(Buffer.byteLength(body)) } : {}), ...headers }, agent: false }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      });
      req.on("error", reject);
      req.end(body);
    });
  };
  const echo = (r: { status: number; text: string }): Echo => {
    expect(r.status, r.text).to.equal(200);
    return JSON.parse(r.text) as Echo;
  };
  const hostOf = (port: number, hostname = h, tenant = a): string => `${port}-${hostname}.${tenant}.${BASE}`;
  const mint = async (port: number, ttl?: string, hostname = h): Promise<{ status: number; json: Record<string, string>; text: string }> => {
    const r = await sup.gw(tokenA, "POST", `/vm/${hostname}/preview-tokens`, ttl === undefined ? { port } : { port, ttl });
    return { status: r.status, json: (r.json ?? {}) as Record<string, string>, text: r.text };
  };

  before(async () => {
    // The repository's templates plus `nopool` (sandbox without a warm pool): tenant B needs no VM.
    templates = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-pvtpl-"));
    const sandbox = await fs.readFile(path.join(PROJECT_ROOT, "templates", "sandbox.yaml"), "utf8");
    await fs.writeFile(path.join(templates, "sandbox.yaml"), sandbox);
    await fs.writeFile(path.join(templates, "nopool.yaml"), sandbox.replace(/\n {2}warm_pool:\n {4}sbox: 1\n/, "\n"));
    sup = await TestSupervisor.create({ mode: "child", config: { ...realDaemonConfig(), templates: { dir: templates }, preview: { base_domain: BASE, max_ttl: "2h" } } });
    await sup.start();
    [tokenA, tokenB] = await Promise.all([sup.createTenant(a, "sandbox"), sup.createTenant(b, "nopool")]);
    const r = await sup.gw(tokenA, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", {});
    expect(r.status, r.text).to.be.oneOf([200, 201]);
    h = (r.json as { hostname: string }).hostname;
    createdAt = ((await sup.gw(tokenA, "GET", `/vm/${h}`)).json as { created_at: string }).created_at;
    const l = await sup.gw(tokenA, "POST", `/vm/${h}/exec?background=true&cmd=/.paddock/bin/node&args=-e&args=${encodeURIComponent(APP)}&uid=0`);
    expect(l.status, l.text).to.equal(201);
    // Poll the app through the path form with the tenant token until it answers.
    for (let i = 0; ; i++) {
      const p = await send("GET", `/preview/${a}/${h}/8080/`, { authorization: `Bearer ${tokenA}` });
      if (p.status === 200) break;
      if (i > 300) throw new Error(`the app never answered: ${p.status} ${p.text}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    const m = await mint(8080, "30m");
    expect(m.status, m.text).to.equal(201);
    preview = m.json.token as string;
  });

  after(async () => {
    if (sup) await sup.destroy([a, b]);
    if (templates) await fs.rm(templates, { recursive: true, force: true });
    expect(await leaksOf(a), "leaks.sh --tenant a").to.deep.equal([]);
    expect(await leaksOf(b), "leaks.sh --tenant b").to.deep.equal([]);
  });

  it("mints a token: url_host, url_path, expires_at; ttl over preview.max_ttl and unknown fields are refused; an unknown VM is 404", async () => {
    const m = await mint(8080);
    expect(m.status, m.text).to.equal(201);
    expect(m.json.url_host).to.equal(hostOf(8080));
    expect(m.json.url_path).to.equal(`/preview/${a}/${h}/8080/`);
    const left = Date.parse(m.json.expires_at as string) - Date.now();
    expect(left).to.be.within(3_500_000, 3_600_000); // default 1 h
    expect((await mint(8080, "3h")).status).to.equal(400);
    expect((await sup.gw(tokenA, "POST", `/vm/${h}/preview-tokens`, { port: 8080, scope: "all" })).status).to.equal(400);
    expect((await mint(0)).status).to.equal(400);
    const missing = await mint(8080, undefined, "sbox-999");
    expect(missing.status, missing.text).to.equal(404);
    expect((await sup.gw(undefined, "POST", `/vm/${h}/preview-tokens`, { port: 8080 })).status, "mint needs the tenant token").to.equal(401);
    // Minting is audited (never the token itself).
    const audit = await fs.readFile(path.join(sup.stateDir, "supervisor", "audit.log"), "utf8");
    const mints = audit.split("\n").filter((l) => l.includes("\"preview_token.mint\""));
    expect(mints.length, audit).to.be.at.least(2);
    expect(mints.join("")).to.include(`"hostname":"${h}"`).and.not.include("pvt_");
  });

  it("the host-name form and the path form reach the app; the path form strips its prefix and says so in X-Forwarded-Prefix", async () => {
    const viaHost = echo(await send("POST", "/some/path?x=1&y=2", { host: hostOf(8080), authorization: `Bearer ${preview}` }, "hello"));
    expect(viaHost).to.include({ method: "POST", url: "/some/path?x=1&y=2", bytes: 5 });
    expect(viaHost.headers).to.include({ host: hostOf(8080), "x-forwarded-host": hostOf(8080), "x-forwarded-proto": "http" });
    expect(viaHost.headers).to.not.have.property("x-forwarded-prefix");
    const viaPath = echo(await send("PUT", `/preview/${a}/${h}/8080/deep//x?q=%2F`, { authorization: `Bearer ${preview}` }, "abc"));
    expect(viaPath).to.include({ method: "PUT", url: "/deep//x?q=%2F", bytes: 3 });
    expect(viaPath.headers["x-forwarded-prefix"]).to.equal(`/preview/${a}/${h}/8080`);
    const slash = await send("GET", `/preview/${a}/${h}/8080?z=1`);
    expect(slash.status).to.equal(308);
    expect(slash.headers.location).to.equal(`/preview/${a}/${h}/8080/?z=1`);
  });

  it("neither the tenant token nor the preview token reaches the app (header, query, cookie), other cookies and headers do", async () => {
    const seen: Echo[] = [];
    seen.push(echo(await send("GET", "/t", { host: hostOf(8080), authorization: `Bearer ${tokenA}`, "x-paddock-tenant": "evil", "x-forwarded-for": "1.2.3.4", "x-custom": "kept" })));
    seen.push(echo(await send("GET", `/preview/${a}/${h}/8080/t?a=1&paddock_token=${encodeURIComponent(preview)}&b=2`)));
    seen.push(echo(await send("GET", "/t", { host: hostOf(8080), cookie: `other=1; paddock_preview=${preview}`, referer: `http://${hostOf(8080)}/?paddock_token=${preview}` })));
    for (const e of seen) {
      const all = JSON.stringify(e);
      expect(all).to.not.include(tokenA);
      expect(all).to.not.include(preview);
      expect(e.headers).to.not.have.property("authorization");
      expect(e.headers).to.not.have.property("x-paddock-tenant");
      expect(e.headers).to.not.have.property("referer");
    }
    expect(seen[0]?.headers["x-custom"]).to.equal("kept");
    expect(seen[0]?.headers["x-forwarded-for"]).to.not.include("1.2.3.4");
    expect(seen[1]?.url).to.equal("/t?a=1&b=2");
    expect(seen[2]?.headers.cookie).to.equal("other=1");
    // Positive control: the app does echo an Authorization that is not a Paddock token.
    const basic = echo(await send("GET", "/t", { host: hostOf(8080), cookie: `paddock_preview=${preview}`, authorization: "Basic dTpw" }));
    expect(basic.headers.authorization).to.equal("Basic dTpw");
  });

  it("a query token on the host-name form is exchanged for a host-only HttpOnly SameSite=Lax cookie by a 303; the path form keeps no cookie and sandboxes the page", async () => {
    const r = await send("GET", `/app?x=1&paddock_token=${encodeURIComponent(preview)}`, { host: hostOf(8080) });
    expect(r.status, r.text).to.equal(303);
    expect(r.headers.location).to.equal("/app?x=1");
    const cookie = (r.headers["set-cookie"] ?? [])[0] ?? "";
    expect(cookie).to.match(/^paddock_preview=pvt_[^;]+; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/);
    const back = await send("GET", "/app?x=1", { host: hostOf(8080), cookie: cookie.split(";")[0] as string });
    expect(echo(back).url).to.equal("/app?x=1");
    expect(back.headers["set-cookie"], "the app's own cookie passes on its own origin").to.deep.equal(["app=1; Path=/"]);
    const p = await send("GET", `/preview/${a}/${h}/8080/`, { authorization: `Bearer ${preview}`, cookie: "app=1" });
    expect(echo(p).headers).to.not.have.property("cookie");
    expect(p.headers["set-cookie"]).to.equal(undefined);
    expect(p.headers["content-security-policy"]).to.match(/^sandbox /);
    // The path form does not take the cookie either.
    expect((await send("GET", `/preview/${a}/${h}/8080/`, { cookie: cookie.split(";")[0] as string })).status).to.equal(401);
  });

  it("a token opens its port only: not another port, VM or tenant; expired, forged and missing tokens get 401", async () => {
    const auth = { authorization: `Bearer ${preview}` };
    expect((await send("GET", "/", { host: hostOf(8080), ...auth })).status, "positive control").to.equal(200);
    expect((await send("GET", "/", { host: hostOf(8081), ...auth })).status, "other port").to.equal(401);
    expect((await send("GET", `/preview/${a}/${h}/8081/`, auth)).status, "other port, path form").to.equal(401);
    expect((await send("GET", "/", { host: hostOf(8080, "sbox-999"), ...auth })).status, "other VM").to.equal(401);
    expect((await send("GET", "/", { host: hostOf(8080, h, b), ...auth })).status, "other tenant").to.equal(401);
    expect((await send("GET", `/preview/${b}/${h}/8080/`, { authorization: `Bearer ${tokenA}` })).status, "tenant A's token on tenant B").to.equal(401);
    // Positive controls: the tenant's own token passes the gateway on those addresses.
    expect((await send("GET", "/", { host: hostOf(8081), authorization: `Bearer ${tokenA}` })).status, "nothing on 8081").to.equal(502);
    expect((await send("GET", "/", { host: hostOf(8080, "sbox-999"), authorization: `Bearer ${tokenA}` })).status, "no such VM").to.equal(404);
    expect((await send("GET", `/preview/${b}/${h}/8080/`, { authorization: `Bearer ${tokenB}` })).status, "tenant B has no such VM").to.equal(404);
    expect((await send("GET", "/", { host: hostOf(8080) })).status, "no token").to.equal(401);
    const forged = preview.replace(/.$/, (c) => (c === "A" ? "B" : "A"));
    expect((await send("GET", "/", { host: hostOf(8080), authorization: `Bearer ${forged}` })).status, "forged").to.equal(401);
    const short = await mint(8080, "1s");
    expect(short.status).to.equal(201);
    await new Promise((res) => setTimeout(res, Math.max(0, Date.parse(short.json.expires_at as string) - Date.now()) + 50));
    expect((await send("GET", "/", { host: hostOf(8080), authorization: `Bearer ${short.json.token as string}` })).status, "expired").to.equal(401);
    expect((await send("GET", "/nonsense", { host: `80x-${h}.${a}.${BASE}`, ...auth })).status, "bad port label").to.equal(400);
  });

  it("a token bound to an earlier VM of the same name is refused by the daemon (the key signs, the VM's created_at differs); one for a VM that is gone gets 404", async () => {
    const key = await fs.readFile(path.join(sup.stateDir, "supervisor", "preview-keys", `${a}.key`));
    const sign = (c: string, hn = h): string => {
      const payload = Buffer.from(JSON.stringify({ v: 1, t: a, h: hn, p: 8080, c, e: Math.floor(Date.now() / 1000) + 600 })).toString("base64url");
      return `pvt_${payload}.${createHmac("sha256", key).update(`paddock-preview-v1.${payload}`).digest("base64url")}`;
    };
    expect((await send("GET", "/", { host: hostOf(8080), authorization: `Bearer ${sign(createdAt)}` })).status, "positive control").to.equal(200);
    const stale = await send("GET", "/", { host: hostOf(8080), authorization: `Bearer ${sign("2000-01-01T00:00:00.000Z")}` });
    expect(stale.status, stale.text).to.equal(401);
    // A valid token for a VM that is gone: 404 says only that the granted VM is gone (docs/security.md "Preview URLs").
    const gone = await send("GET", "/", { host: hostOf(8080, `${h}99`), authorization: `Bearer ${sign(createdAt, `${h}99`)}` });
    expect([gone.status, gone.text], "a valid token for a VM that is gone").to.deep.equal([404, gone.text]);
    expect((JSON.parse(gone.text) as { code: string }).code).to.equal("ERR_VM_NOT_FOUND");
  });

  it("streams SSE through the preview", async () => {
    const r = await send("GET", "/sse", { host: hostOf(8080), authorization: `Bearer ${preview}` });
    expect(r.status).to.equal(200);
    expect(r.headers["content-type"]).to.equal("text/event-stream");
    expect(r.text).to.equal("data: 0\n\ndata: 1\n\ndata: 2\n\n");
  });

  it("echoes WebSocket messages through both forms; tokens do not reach the app; no token is refused before the upgrade", async () => {
    const { host, port } = sup.gatewayTarget();
    for (const [url, headers] of [
      [`ws://${host}:${port}/ws?paddock_token=${encodeURIComponent(preview)}`, { host: hostOf(8080) }],
      [`ws://${host}:${port}/preview/${a}/${h}/8080/ws`, { authorization: `Bearer ${tokenA}` }],
    ] as const) {
      // Listen before the handshake ends: the app's first message may come with its 101.
      const ws = new WebSocket(url, { headers });
      try {
        const msgs: string[] = [];
        const got = new Promise<void>((resolve, reject) => {
          ws.on("message", (d: Buffer) => {
            msgs.push(d.toString());
            if (msgs.length === 2) resolve();
          });
          ws.once("unexpected-response", (_q, res: http.IncomingMessage) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
          ws.once("error", reject);
        });
        ws.once("open", () => ws.send("ping-preview"));
        await got;
        const first = JSON.parse(msgs[0] as string) as { url: string; headers: Record<string, string> };
        expect(first.url).to.equal("/ws");
        expect(JSON.stringify(first)).to.not.include(preview);
        expect(JSON.stringify(first)).to.not.include(tokenA);
        expect(msgs[1]).to.equal("ping-preview");
      } finally {
        ws.terminate();
      }
    }
    const err = await openWs(`ws://${host}:${port}/ws`, { host: hostOf(8080) }).then((ws) => {
      ws.terminate();
      return undefined;
    }, (e: { status?: number }) => e);
    expect(err?.status).to.equal(401);
    // The preview metrics count what went through, by form and auth.
    const m = await request(sup.adminTarget(), "GET", "/metrics", undefined, { authorization: `Bearer ${sup.adminToken}` });
    expect(m.text).to.match(new RegExp(`paddock_preview_requests_total\\{tenant="${a}",form="host",auth="preview_token",code="200"\\} [1-9]`));
    expect(m.text).to.match(new RegExp(`paddock_preview_requests_total\\{tenant="${a}",form="path",auth="tenant_token",code="101"\\} 1`));
    expect(m.text).to.match(new RegExp(`paddock_preview_tokens_minted_total\\{tenant="${a}"\\} [1-9]`));
  });
});
