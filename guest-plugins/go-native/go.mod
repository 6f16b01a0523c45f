module gonative

go 1.27
