export { cachedVersions, compareVersions, findServerBinary, repoRoot, type ServerBinary } from "./binary.js";
export { type ClusterNode, type NatsCluster, startCluster } from "./cluster.js";
export { type OperatorMode, operatorMode } from "./operator.js";
export { freePort, type NatsServer, type ServerOptions, startServer, useServer } from "./server.js";
export { sleep, waitFor } from "./testing.js";
export { makeTestCerts, type TestCerts } from "./tls.js";
