// Package client is the root of Strata's Go client module, which the strata
// CLI is built on. Its packages speak the services' gRPC protocols from the
// client's side: buildcontext walks a build context and runs the client half
// of the Build RPC's context-sync protocol.
package client
