# syntax=docker/dockerfile:1
# escape=`
FROM reg.example/a:1 `
  AS b
