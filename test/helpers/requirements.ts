// What a test needs that the machine may lack (server binaries, client tools, OS users). Outside
// CI a test without them skips; in CI their absence means the environment is broken, and a
// silent skip would hide it, so it is an error.

/** The reason to skip for these missing prerequisites, or null when nothing is missing. Throws in CI. */
export function unavailable(missing: readonly string[]): string | null {
  if (missing.length === 0) return null;
  const msg = `${missing.join(', ')} not installed`;
  if (process.env.CI === 'true') throw new Error(`${msg} (required in CI)`);
  return msg;
}

