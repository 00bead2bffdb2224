import type { Config } from '../config/schema.ts';
import { openStore, type Store } from '../store/db.ts';
import { storeOptions } from '../store/options.ts';

export async function withStore<T>(config: Config, fn: (s: Store) => Promise<T>): Promise<T> {
  const store = await openStore(storeOptions(config));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}
