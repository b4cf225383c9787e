/**
 * Tenant network benchmark: per-VM network set-up cost (attach p50, isolated and
 * bridge) and TCP throughput VM → test host through veth + NAT vs host → test host directly.
 * Root only; uses 198.18.0.0/15 addresses and cleans up what it creates.
 * Run: `npm run build && node dist/scripts/bench/network-bench.js`
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { silentLogger } from "../../shared/logger.js";
import { createTenantNetwork } from "../../tenant-daemon/network/tenant-network.js";
import { vmNetnsName } from "../../tenant-daemon/network/names.js";
import { ip4, makeTestHost, randomBlock, randomTenant, tempDir, tenantConfig } from "../lib/net-fixtures.js";

const SINK = "const net=require('net');const [h,p]=process.argv.slice(1);net.createServer(c=>{c.on('data',()=>{});c.on('end',()=>c.end())}).listen(Number(p),h,()=>console.log('ready'));";
const SEND = "const net=require('net');const [h,p,mb]=process.argv.slice(1);const buf=Buffer.alloc(1<<20);let left=Number(mb);const c=net.connect({host:h,port:Number(p)},()=>{const t0=process.hrtime.bigint();" +
  "const pump=()=>{while(left>0){left--;if(!c.write(buf)){c.once('drain',pump);return}}c.end()};c.on('close',()=>{const s=Number(process.hrtime.bigint()-t0)/1e9;console.log((Number(mb)/s).toFixed(1))});pump()});";

function p50(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

async function runOut(argv: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    c.stdout.on("data", (d: Buffer) => (out += String(d)));
    c.once("exit", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`${argv.join(" ")} exited ${code}`))));
  });
}

async function main(): Promise<void> {
  const n = Number(process.env.BENCH_VMS ?? 20);
  const mb = Number(process.env.BENCH_MB ?? 300);
  const tenant = randomTenant();
  const dir = await tempDir();
  const th = await makeTestHost();
  const net = createTenantNetwork({
    config: tenantConfig(tenant, [
      { name: "iso", count: 0, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` } },
      { name: "br", count: 0, network: { gateway: `${ip4(randomBlock("vm22") + 1)}/24` } },
    ]),
    logger: silentLogger,
    stateDir: dir,
  });
  const sink = spawn("ip", ["netns", "exec", th.ns, process.execPath, "-e", SINK, th.ip, "9000"], { stdio: ["ignore", "pipe", "inherit"] });
  const sinkExit = new Promise((r) => sink.once("exit", r));
  try {
    await new Promise<void>((r) => sink.stdout.once("data", () => r()));
    await net.start();
    const result: Record<string, number | string> = {};
    for (const group of ["iso", "br"]) {
      const times: number[] = [];
      for (let i = 1; i <= n; i++) {
        const h = `${group}-${i}`;
        const t0 = performance.now();
        net.reserve({ hostname: h, hostGroup: group });
        await net.attach({ hostname: h, hostGroup: group });
        times.push(performance.now() - t0);
      }
      result[`attach_p50_ms_${group}`] = Number(p50(times).toFixed(1));
      for (let i = 2; i <= n; i++) {
        await net.detach(`${group}-${i}`);
        net.release(`${group}-${i}`);
      }
    }
    const direct = await runOut([process.execPath, "-e", SEND, th.ip, "9000", String(mb)]);
    const viaNat = await runOut(["ip", "netns", "exec", vmNetnsName(tenant, "br-1"), process.execPath, "-e", SEND, th.ip, "9000", String(mb)]);
    const viaIso = await runOut(["ip", "netns", "exec", vmNetnsName(tenant, "iso-1"), process.execPath, "-e", SEND, th.ip, "9000", String(mb)]);
    result.tcp_MBps_host_direct = Number(direct);
    result.tcp_MBps_bridge_vm_nat = Number(viaNat);
    result.tcp_MBps_isolated_vm_nat = Number(viaIso);
    result.ratio_bridge_vs_direct = (Number(viaNat) / Number(direct)).toFixed(2);
    result.ratio_isolated_vs_direct = (Number(viaIso) / Number(direct)).toFixed(2);
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    sink.kill("SIGTERM");
    await sinkExit;
    await net.stop();
    await th.remove();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

await main();
