/**
 * The one error type the client throws. `code` says what went wrong, so the
 * app (and the client's own fallbacks) can branch on it: every failure of
 * the patch applier is one of the `delta.*` codes, the Go applier's errors
 * (delta/errors.go) one for one.
 */
export type ErrorCode =
  | 'corrupt' // the patch is malformed, truncated or inconsistent
  | 'unsupported' // a format version, flag or codec this client does not read
  | 'wrong-base' // the patch starts from another release, or a base file changed
  | 'wrong-target' // the patch makes another release
  | 'verify' // bytes do not match what the release key or origin key signed
  | 'too-large' // over a configured bound
  | 'unsafe-path' // a path would leave the release folder
  | 'bad-manifest' // a file list or document passed in is invalid
  | 'replay' // a channel record older than one already seen
  | 'expired' // a channel record past its expiry (a freeze attack)
  | 'wrong-record' // a record for another app or channel
  | 'network' // an edge did not answer, or answered with an error
  | 'no-edge' // no edge gave a usable answer
  | 'state' // the client's own storage or install step failed

export class CapstanError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'CapstanError'
    this.code = code
  }
}

/** wrap turns anything thrown into a CapstanError with code, keeping the cause. */
export function wrap(e: unknown, code: ErrorCode, what: string): CapstanError {
  if (e instanceof CapstanError) return e
  const msg = e instanceof Error ? e.message : String(e)
  return new CapstanError(code, `${what}: ${msg}`, { cause: e })
}
