export { compareVersions, findServerBinary, repoRoot, type ServerBinary } from "./binary.js";
export { freePort, startServer, useServer, type NatsServer, type ServerOptions } from "./server.js";
export { sleep, waitFor } from "./testing.js";
