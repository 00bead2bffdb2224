/** Parses "30d", "12h", "15m", "45s" into milliseconds; null for anything else. */
export function parseDuration(s: string): number | null {
  const m = /^(\d{1,6})([smhdw])$/.exec(s.trim());
  if (!m) return null;
  const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
  return Number(m[1]) * unit;
}
