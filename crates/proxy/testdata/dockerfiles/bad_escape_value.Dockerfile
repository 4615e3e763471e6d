# escape=x
FROM reg.example/a:1
