"""Raw datasets: dataset.json, cases, image I/O with geometry, integrity check, built-in examples."""
