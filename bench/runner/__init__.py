"""The benchmark runner behind bench/run: builds the servers, runs the load scenarios and
writes the results page."""
