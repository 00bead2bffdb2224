import { join } from 'node:path';
import type { Config } from '../config/schema.ts';
import type { StoreOptions } from './db.ts';

export function storeOptions(config: Config): StoreOptions {
  return { store: config.store, sqlitePath: join(config.dataDir, 'gatehouse.db'), fsync: config.journal.fsync };
}
