module github.com/zosgrid/zos/bench/hubbench

go 1.26
