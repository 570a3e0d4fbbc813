/**
 * The CLI's connection to a server's control socket: the shared client, with
 * the CLI's own words for nobody answering and for a server of another user.
 *
 * @module
 */

import { InstarError } from "../errors.ts";
import { ControlClient, nobodyThere } from "../protocol/client.ts";

/** Connects to the server at `path`; throws `ENOENT`/`ECONNREFUSED` or `PERMISSION_DENIED` saying what to do. */
export function connectServer(path: string): ControlClient {
  try {
    return ControlClient.connect(
      path,
      (uid, ours) =>
        `the process answering on ${path} runs as uid ${uid}, not ${ours}: not trusting it ` +
        "(run instar as the server's user)",
    );
  } catch (e) {
    if (!nobodyThere(e)) throw e;
    const code = (e as InstarError).code;
    throw new InstarError(
      code,
      `no server answers on ${path} (${code}): is it running with controlSocket set to this path?`,
    );
  }
}
