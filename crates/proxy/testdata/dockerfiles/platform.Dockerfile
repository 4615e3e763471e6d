ARG P=linux/amd64
FROM --platform=$P reg.example/a:1
