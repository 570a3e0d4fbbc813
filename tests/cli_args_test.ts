// The `instar` command line read in-process (src/cli/args.ts), and the
// control-socket client the CLI and a handover share (src/protocol/client.ts).
// cli_test.ts runs the command itself.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import * as sys from "../src/ffi/mod.ts";
import { encodeUnix } from "../src/ffi/sockaddr.ts";
import { parseCommand, UsageError } from "../src/cli/args.ts";
import { HELP } from "../src/cli/help.ts";
import { ControlClient, nobodyThere } from "../src/protocol/client.ts";
import { Channel } from "../src/protocol/channel.ts";
import { messages, PROTOCOL_VERSION } from "../src/protocol/messages.ts";
import { cleanupAfterTests } from "./support/helpers.ts";

const dir = cleanupAfterTests().tempDir("instar-cli-args-");

describe("instar command line", () => {
  test("help, run and the two server commands", () => {
    assert.deepEqual(parseCommand([]), { name: "help", text: HELP.main, exitCode: 2 });
    assert.deepEqual(parseCommand(["help"]), { name: "help", text: HELP.main, exitCode: 0 });
    assert.deepEqual(parseCommand(["status", "-h"]), {
      name: "help",
      text: HELP.status,
      exitCode: 0,
    });
    assert.deepEqual(parseCommand(["run", "--bogus", "--", "x"]), {
      name: "run",
      args: ["--bogus", "--", "x"],
    });
    assert.deepEqual(parseCommand(["status", "--pid-file", "/p", "--json"]), {
      name: "status",
      pidFile: "/p",
      json: true,
    });
    assert.deepEqual(
      parseCommand(["upgrade", "--control", "/c", "--trigger", "watch", "--wait-drain"]),
      {
        name: "upgrade",
        control: "/c",
        json: false,
        timeout: 120_000,
        signal: "SIGHUP",
        trigger: "watch",
        waitDrain: true,
        window: 0,
      },
    );
    const byPid = parseCommand([
      "upgrade",
      "--pid-file=/p",
      "--signal",
      "SIGUSR2",
      "--promotion-window",
      "500",
      "--timeout",
      "9000",
    ]);
    assert.equal(byPid.name, "upgrade");
    assert.deepEqual(
      byPid.name === "upgrade" ? [byPid.pidFile, byPid.signal, byPid.window, byPid.timeout] : [],
      ["/p", "SIGUSR2", 500, 9000],
    );
  });

  test("every misuse is a one-line UsageError", () => {
    for (
      const [args, text] of [
        [["upgrade", "--control", "/a", "--wait-drain", "--pid-file", "/b"], /exactly one of/],
        [["upgrade", "--pid-file", "/a", "--trigger", "x"], /apply only to upgrade --control/],
        [["upgrade", "--control", "/a", "--trigger", "Not A Word"], /lower-case word/],
        [["upgrade", "--pid-file", "/a", "--signal", "SIGTERM"], /not an upgrade signal/],
        [["upgrade", "--pid-file", "/a", "--promotion-window", "1.5"], /whole number/],
        [["status", "--control", "/a", "--promotion-window", "5"], /applies only to upgrade --pid/],
        [["upgrade", "--control"], /argument missing/],
      ] as const
    ) {
      assert.throws(() => parseCommand([...args]), (e: unknown) => {
        assert.ok(e instanceof UsageError, `${args.join(" ")}: ${e}`);
        assert.match(e.message, text);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
    }
  });
});

describe("control-socket client", () => {
  test("nobody there throws the connect error; a peer of our own user is believed", () => {
    const path = join(dir, "ctl.sock");
    assert.throws(() => ControlClient.connect(path, () => "unused"), (e) => nobodyThere(e));
    const server = sys.socket(sys.C.AF_UNIX, sys.C.SOCK_STREAM | sys.C.SOCK_CLOEXEC);
    sys.bind(server, encodeUnix(path));
    sys.listenFd(server, 4);
    const client = ControlClient.connect(path, () => "unused");
    const peer = new Channel(sys.accept4(server, sys.C.SOCK_CLOEXEC));
    try {
      client.send(messages.upgrade("watch"));
      assert.deepEqual(peer.receiveSync(2000).msg, {
        type: "upgrade",
        v: PROTOCOL_VERSION,
        trigger: "watch",
      });
      peer.send(messages.progress("spawned", 42));
      assert.deepEqual(client.replySync(2000), messages.progress("spawned", 42));
      assert.equal(client.ended, false);
      peer.send(messages.upgraded(42));
      peer.close();
      const rest = [];
      for (let i = 0; i < 50 && !client.ended; i++) {
        rest.push(...client.replies());
        sys.poll([{ fd: client.channel.fd, events: sys.C.POLLIN }], 20);
      }
      assert.deepEqual(rest, [messages.upgraded(42)]);
      assert.equal(client.ended, true);
    } finally {
      client.close();
      sys.close(server);
    }
  });

  test("the messages the CLI and the report send are the constructors'", () => {
    assert.deepEqual(messages.status(), { type: "status", v: PROTOCOL_VERSION });
    assert.deepEqual(messages.upgrade(), { type: "upgrade", v: PROTOCOL_VERSION });
    const report = { trigger: "cli" } as unknown as Parameters<typeof messages.report>[0];
    const counters = {} as Parameters<typeof messages.report>[1];
    assert.deepEqual(messages.report(report, counters), {
      type: "report",
      v: PROTOCOL_VERSION,
      report,
      counters,
    });
  });
});
