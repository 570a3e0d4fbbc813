/**
 * A WebSocket chat that upgrades in place, on Deno and on Bun. Every text
 * message a client sends is broadcast to all clients connected to the same
 * generation, prefixed with the generation's pid.
 *
 * Across an upgrade, open sockets stay on the old generation and keep
 * chatting until they close or the drain timeout closes them (code 1012,
 * Service Restart); new sockets reach the new generation. When its generation
 * starts draining, every client gets a `draining` notice, so it can reconnect
 * when it suits it: the notices are spread over `--close-spread` ms (default
 * 5 s), so that thousands of clients that reconnect at once do not overflow
 * the new generation's listen queue.
 *
 *   deno run -A examples/ws_chat.ts --port 8080     (or: bun examples/ws_chat.ts …)
 *   kill -HUP $(cat app.pid)    # start the new generation; open chats stay on this one
 *   kill -TERM $(cat app.pid)   # stop gracefully
 *
 * Messages from the server (text):
 *   `welcome pid <pid> generation <n>`         on connecting
 *   `pid <pid>: <message>`                     a broadcast (the sender gets it too)
 *   `draining pid <pid>: reconnect to move on` this generation stopped accepting
 * `GET /` without an upgrade answers `ws chat pid <pid> generation <n>: <k> client(s)`.
 *
 * Flags: see examples/_lifecycle.ts (--port, --hostname, --pid-file,
 * --drain-timeout, --ready-timeout, --spawn-backend, --control, --close-spread);
 * `--backlog <n>` sets the listening socket's accept queue (default 4096, SOMAXCONN).
 *
 * @module
 */
import process from "node:process";
import type { PortableServeOptions, UpgraderServeOptions } from "../mod.ts";
import { startGeneration } from "./_lifecycle.ts";

const { up, hostname, port, serveMode, flags } = await startGeneration("chat", {
  backlog: { type: "string" },
});
const backlog = flags.backlog === undefined ? undefined : Number(flags.backlog);

// ---------------------------------------------------------------- the chat, runtime-neutral

interface Peer {
  send(message: string): void;
}

const peers = new Set<Peer>();

function broadcast(message: string): void {
  for (const p of peers) p.send(message);
}

const NOTICE = `draining pid ${process.pid}: reconnect to move on`;

function joined(peer: Peer): void {
  peers.add(peer);
  peer.send(`welcome pid ${process.pid} generation ${up.generation}`);
  // Accepted just before this generation stopped accepting (the runtime still delivers those):
  // it missed the notices, so it is told at once.
  if (up.state === "draining") peer.send(NOTICE);
}

function said(message: string | ArrayBuffer | Uint8Array): void {
  if (typeof message === "string") broadcast(`pid ${process.pid}: ${message}`);
}

function page(): Response {
  return new Response(
    `ws chat pid ${process.pid} generation ${up.generation}: ${peers.size} client(s)\n`,
  );
}

// Told a few at a time: thousands reconnecting in the same instant would overflow the listen queue.
up.on("draining", ({ spread }) => {
  void spread(peers, (p) => p.send(NOTICE));
});

// ---------------------------------------------------------------- the runtime's WebSocket API

if (process.versions.bun) {
  // Bun upgrades inside `fetch` and delivers socket events to the `websocket` handlers.
  // `deno check` checks this file with Deno's types, under which Bun's options are not
  // `up.serve()`'s: they are written against the portable type here. A Bun-only program
  // (examples/bun_serve.ts) gets Bun's own types and needs no cast.
  interface BunServer {
    upgrade(req: Request): boolean;
  }
  const bun: PortableServeOptions = {
    fetch: (req: Request, server: BunServer) => server.upgrade(req) ? undefined : page(),
    websocket: {
      open: (ws: Peer) => joined(ws),
      message: (_ws: Peer, m: string | Uint8Array) => said(m),
      close: (ws: Peer) => void peers.delete(ws),
    },
  };
  await up.serve({ hostname, port, backlog, mode: serveMode, ...bun } as UpgraderServeOptions);
} else {
  // Deno upgrades a request into a WebSocket object with its own event handlers.
  await up.serve({
    hostname,
    port,
    backlog,
    mode: serveMode,
    fetch(req) {
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") return page();
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => joined(socket);
      socket.onmessage = (e) => said(e.data);
      socket.onclose = () => void peers.delete(socket);
      return response;
    },
  });
}

await up.ready();
