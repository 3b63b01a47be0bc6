// An operator-mode nats-server config made at test time (the way production NATS deployments with JWT
// credentials run): an operator, a system account, an account with JetStream and one without, each
// with a user whose creds file (JWT + seed) is written to `dir`. A memory resolver preloads the accounts.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeAccount, encodeOperator, encodeUser, fmtCreds } from "@nats-io/jwt";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";

export interface OperatorMode {
  /** Lines for startServer({ config }). */
  config: string;
  /** A creds file for a user of the account with JetStream. */
  creds: string;
  /** A creds file for a user of an account without JetStream. */
  noJetStreamCreds: string;
  /** The seeds written to the creds files: no output may contain them. */
  seeds: string[];
}

export async function operatorMode(dir: string): Promise<OperatorMode> {
  const operator = createOperator();
  const [system, app, plain] = [createAccount(), createAccount(), createAccount()];
  // Claims give what they name: limits left out are 0 (no connections at all), so name them all.
  const nats = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  const jetstream = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 }; // left out: no JetStream
  const accounts: [string, KeyPair, string][] = [
    [system.getPublicKey(), system, await encodeAccount("SYS", system, {}, { signer: operator })],
    [app.getPublicKey(), app, await encodeAccount("APP", app, { limits: { ...nats, ...jetstream } }, { signer: operator })],
    [plain.getPublicKey(), plain, await encodeAccount("NOJS", plain, { limits: nats }, { signer: operator })],
  ];
  const seeds: string[] = [];
  const userCreds = async (name: string, account: KeyPair) => {
    const user = createUser();
    seeds.push(new TextDecoder().decode(user.getSeed()));
    const file = join(dir, `${name}.creds`);
    writeFileSync(file, fmtCreds(await encodeUser(name, user, account), user));
    return file;
  };
  const creds = await userCreds("app", app);
  const noJetStreamCreds = await userCreds("nojs", plain);
  const config = [
    `operator: ${await encodeOperator("jsp-test", operator, { system_account: system.getPublicKey() })}`,
    `system_account: ${system.getPublicKey()}`,
    "resolver: MEMORY",
    `resolver_preload: { ${accounts.map(([pub, , jwt]) => `${pub}: ${jwt}`).join(", ")} }`,
  ].join("\n");
  return { config, creds, noJetStreamCreds, seeds };
}
