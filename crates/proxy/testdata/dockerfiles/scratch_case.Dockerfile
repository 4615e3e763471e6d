FROM scratch AS s
FROM S
