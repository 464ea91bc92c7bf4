// Package archtest holds the test that keeps Capstan's imports pointing
// one way (docs/architecture.md, "Where each package sits"): every package
// sits in one row of a table, imports only packages of rows below its own,
// and a few packages are kept from ever linking what they must not (an
// edge links no signing code, a device and the API client link no store).
// It has no code of its own.
package archtest
