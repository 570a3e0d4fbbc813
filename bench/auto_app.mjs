// A hello-world server that does not import instar, for bench/auto.ts: `native` (Bun.serve or
// Deno.serve; `native-req` the same with a handler that takes the request) or `node` (node:http), on port 0; prints `port=<n>` once it serves. Under
// instar/auto a Bun.serve/Deno.serve result reads port 0 for a few ms, so `native` asks again.
import http from "node:http";
import process from "node:process";

const body = "hello\n";
if (process.argv[2] === "node") {
  const server = http.createServer((_req, res) => res.end(body));
  server.listen(0, "127.0.0.1", () => console.log(`port=${server.address().port}`));
} else {
  const server = "Bun" in globalThis
    ? Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response(body) })
    : Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      // `native-req`: a handler that takes the request, as most do (Deno builds a Request for it).
      process.argv[2] === "native-req" ? (_req) => new Response(body) : () => new Response(body),
    );
  const print = () => {
    const port = server.port ?? server.addr?.port;
    if (port) console.log(`port=${port}`);
    else setTimeout(print, 10);
  };
  print();
}
