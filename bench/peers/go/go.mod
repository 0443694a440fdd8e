// setup.sh builds this program in GOPATH mode (GO111MODULE=off), where Go does not read
// this file, against Debian's Go library sources: chi v5 from golang-github-go-chi-chi-dev,
// pgx v4 from golang-github-jackc-pgx-v4-dev and errgroup from golang-golang-x-sync-dev. The file names the module and the Go
// version for editors and tools. It has no require lines, because no module proxy is
// reachable to resolve them.
module gopeer

go 1.23
