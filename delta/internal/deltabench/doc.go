// Command deltabench builds or applies one Capstan patch between two bundle
// folders (or zips) and prints the size and time as one JSON line. It is the
// Capstan column of scripts/bench-delta.sh, which measures its peak memory
// with /usr/bin/time.
//
//	deltabench build -from OLD -to NEW -out PATCH [-siblings=false]   (no -from: full bundle)
//	deltabench apply -from OLD -to NEW -patch PATCH [-link]
//	deltabench gen -dir DIR -files N -mb M   (writes DIR/a and DIR/b: a synthetic
//	                                          bundle and its next version)
package main
