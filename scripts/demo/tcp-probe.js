// tcp-probe: the network check of scripts/demo.sh, run inside sandboxes by the guest's own node
// (/.paddock/bin/node), so the check needs nothing from the image.
//   node tcp-probe.js listen PORT           serve "pong <hostname>\n" to every connection, forever
//   node tcp-probe.js connect HOST PORT     exit 0 and print the reply when connected;
//                                           exit 1 when nothing answered within 3 s (dropped),
//                                           exit 3 on a reset or refusal (ECONNRESET, ECONNREFUSED),
//                                           exit 4 on any other error (e.g. no route)
"use strict";
const net = require("node:net");
const os = require("node:os");

const [mode, a, b] = process.argv.slice(2);
if (mode === "listen" && a) {
  net.createServer((s) => s.end(`pong ${os.hostname()}\n`)).listen(Number(a), "0.0.0.0");
} else if (mode === "connect" && a && b) {
  let reply = "";
  const s = net.connect({ host: a, port: Number(b) });
  const timer = setTimeout(() => {
    console.log(`failed: no answer from ${a}:${b} within 3 s`);
    process.exit(1);
  }, 3000);
  s.on("data", (d) => (reply += d));
  s.on("end", () => {
    clearTimeout(timer);
    console.log(`connected to ${a}:${b}: ${reply.trim()}`);
    process.exit(0);
  });
  s.on("error", (err) => {
    clearTimeout(timer);
    console.log(`failed: ${err.code || err.message} (${a}:${b})`);
    process.exit(err.code === "ECONNRESET" || err.code === "ECONNREFUSED" ? 3 : 4);
  });
} else {
  console.error("usage: tcp-probe.js listen PORT | connect HOST PORT");
  process.exit(2);
}
