/** Minimal glob: `*` matches any run of characters, `?` one character. Cached per pattern. */
const cache = new Map<string, RegExp>();
export function globMatch(pattern: string, value: string): boolean {
  let re = cache.get(pattern);
  if (!re) {
    const src = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
    re = new RegExp(`^${src}$`);
    if (cache.size < 10000) cache.set(pattern, re);
  }
  return re.test(value);
}
