// COM_CHANGE_USER: a client switches the logged-in user on an open connection (connection pools
// do it to hand a connection to another user). Through the gateway the "user" is a Gatehouse
// key, so switching means re-authenticating as another identity: the new key is checked like a
// login, against the scramble of this connection's handshake, and the session is recorded
// anew under the new identity. Without a valid key nothing changes hands: the client gets an
// error and the connection closes, as the server itself does after a failed change.
import type { Identity } from '../../identity/keys.ts';
import { findIdentity, standing } from '../../identity/keys.ts';
import type { Guard } from '../../guard/guard.ts';
import type { Store } from '../../store/db.ts';
import { NATIVE_PASSWORD, verifyNativePassword } from './auth.ts';
import type { ComChangeUser } from './packets.ts';

export type ChangeUserOutcome = { ok: true; identity: Identity } | { ok: false; code: number; sqlState: string; message: string };

/** Never equal to a real hash; keeps an unknown user's check as costly as a known one's. */
const DUMMY_NATIVE = Buffer.alloc(20, 0x5a);

export async function verifyChangeUser(
  deps: { store: Store; guard: Guard },
  scramble: Buffer,
  req: ComChangeUser,
  connection: string,
): Promise<ChangeUserOutcome> {
  const denied = (message: string, code = 1045, sqlState = '28000'): ChangeUserOutcome => ({ ok: false, code, sqlState, message });
  const plugin = req.authPlugin || NATIVE_PASSWORD;
  if (plugin !== NATIVE_PASSWORD) {
    // Other plugins need more round trips mid-session; pools use mysql_native_password here.
    return denied(`COM_CHANGE_USER through the gateway takes mysql_native_password, not ${plugin.slice(0, 64)}; reconnect with the other key instead`, 1251, '08004');
  }
  if (req.database && req.database !== connection) {
    return denied(`COM_CHANGE_USER cannot switch the Gatehouse connection from "${connection}" to "${req.database.slice(0, 64)}"; reconnect with database ${req.database.slice(0, 64)}`, 1044, '42000');
  }
  const identity = await findIdentity(deps.store.db, req.user);
  const ok = verifyNativePassword(scramble, req.authResponse, identity?.mysqlNative ?? DUMMY_NATIVE);
  if (!ok || !identity) return denied(`Access denied for user '${req.user.slice(0, 64)}' (using password: YES): the password is the Gatehouse key; the connection is closed`);
  const st = standing(identity);
  if (!st.ok) return denied(`Access denied for user '${req.user.slice(0, 64)}': ${st.message}`);
  const refusal = deps.guard.authorizeConnection(identity, connection);
  if (refusal) return denied(`Access denied for user '${req.user.slice(0, 64)}' to database '${connection}': ${refusal.reason}; hint: ${refusal.hint}`, 1044, '42000');
  return { ok: true, identity };
}
