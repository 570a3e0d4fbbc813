/**
 * How the protocol reports a fault: `PROTOCOL_ERROR` naming what was wrong,
 * with hostile input shown only in part.
 *
 * @module
 */

import { InstarError } from "../errors.ts";

/** Throws `PROTOCOL_ERROR` with a message naming what was wrong. */
export function protocolError(message: string): never {
  throw new InstarError("PROTOCOL_ERROR", `instar control protocol: ${message}`);
}

/** `value` as JSON for an error message, cut to 100 characters: hostile input is never echoed whole. */
export function shown(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 100 ? `${text.slice(0, 100)}…` : text;
}
