export { cachedVersions, compareVersions, findServerBinary, repoRoot, type ServerBinary } from "./binary.js";
export { type ClusterNode, type NatsCluster, type Network, startCluster } from "./cluster.js";
export { type FixtureOptions, type ServerForTests, serverForTests } from "./fixture.js";
export { type Link, tcpLink } from "./link.js";
export { type OperatorMode, operatorMode } from "./operator.js";
export { notPermitted, type Roles, rolesForTests, startRoles } from "./roles.js";
export {
  externalServer,
  freePort,
  type Login,
  type NatsServer,
  type ServerOptions,
  startServer,
  useRolesServer,
  useServer,
} from "./server.js";
export { type ServiceCheck, serviceChecks } from "./services.js";
export { olderServer, parseSent, refusal, sleep, waitFor } from "./testing.js";
export { makeTestCerts, type TestCerts } from "./tls.js";
