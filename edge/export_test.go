package edge

import "github.com/valyala/fasthttp"

// HTTPHandler is the edge's request handler, for benchmarks and allocation
// tests that call it without a socket.
func (s *Server) HTTPHandler() fasthttp.RequestHandler { return s.newHTTPServer().Handler }
