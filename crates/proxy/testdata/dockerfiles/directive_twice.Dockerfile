# escape=`
# escape=`
FROM reg.example/a:1
