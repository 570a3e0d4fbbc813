/**
 * instar: zero-downtime graceful restarts for Deno and Bun servers.
 *
 * @module
 */

export { InstarError, SystemError } from "./src/errors.ts";
